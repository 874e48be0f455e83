//! The floor for `bench/run.sh`: the least work any relay built on this
//! project's stack (hyper 1 server, reqwest client, serde_json) can do per
//! message, and nothing else.
//!
//! For each `POST` (a `GET` is answered `200 {}`, for readiness) it reads the body, takes `recipient` and `body` out of
//! Kratos's JSON with serde_json, sends the same Twilio form the service sends
//! to `{base}/2010-04-01/Accounts/{sid}/Messages.json` through one pooled
//! reqwest client, and answers `200 {}` when the provider answered 2xx (502
//! otherwise). No authentication, schema, phone-number check, limits,
//! deduplication, metrics or logs.
//!
//! It is not a product: it exists to measure how much of the gap between
//! the service and the sandbox alone any relay pays (an extra HTTP server
//! hop and an HTTP client round trip on the same cores), and so how much is
//! the service's own.
//!
//! ```sh
//! cargo run --release --example relay_floor -- LISTEN BASE_URL ACCOUNT_SID AUTH_TOKEN
//! ```

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[derive(serde::Deserialize)]
struct Message {
    recipient: String,
    body: String,
}

struct Relay {
    http: reqwest::Client,
    url: reqwest::Url,
    sid: String,
    token: String,
}

impl Relay {
    async fn handle(
        &self,
        request: http::Request<hyper::body::Incoming>,
    ) -> http::Response<Full<Bytes>> {
        let answer = |status: u16, body: &'static str| {
            http::Response::builder()
                .status(status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .expect("a static response")
        };
        if request.method() == http::Method::GET {
            // A readiness probe for the scripts that start it.
            return answer(200, "{}");
        }
        let Ok(collected) = request.into_body().collect().await else {
            return answer(400, "{}");
        };
        let Ok(message) = serde_json::from_slice::<Message>(&collected.to_bytes()) else {
            return answer(400, "{}");
        };
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("To", &message.recipient)
            .append_pair("From", "+15005550006")
            .append_pair("Body", &message.body)
            .append_pair("ValidityPeriod", "900")
            .finish();
        let sent = self
            .http
            .post(self.url.clone())
            .basic_auth(&self.sid, Some(&self.token))
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                let _ = response.bytes().await;
                answer(200, "{}")
            }
            _ => answer(502, "{}"),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, base, sid, token] = args.as_slice() else {
        eprintln!("usage: relay_floor LISTEN BASE_URL ACCOUNT_SID AUTH_TOKEN");
        std::process::exit(2);
    };
    let relay = Arc::new(Relay {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
        url: format!("{base}/2010-04-01/Accounts/{sid}/Messages.json").parse()?,
        sid: sid.clone(),
        token: token.clone(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen.as_str()).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let relay = relay.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let relay = relay.clone();
                    async move { Ok::<_, Infallible>(relay.handle(request).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
