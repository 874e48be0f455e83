//! Twilio Lookup v2, `GET /v2/PhoneNumbers/{E.164}?Fields=…`, with magic
//! numbers so that `serve --dev` shows every path of the service's Lookup
//! policy: one number per line type, a swapped SIM, a high SMS-pumping
//! score and a lookup that fails. Any other number is `mobile` (a UK
//! geographic number, +441/+442/+443, is `landline`), with no swap and a
//! low score. HTTP Basic as for the rest of the API.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::{json, Value};

use super::answers::{error, json, Answer};
use super::auth;
use super::error::TwilioError;
use super::mask;
use super::State;

/// The magic numbers: the line type each reports.
pub const LINE_TYPE_NUMBERS: [(&str, &str); 11] = [
    ("+14155550171", "landline"),
    ("+14155550172", "fixedVoip"),
    ("+14155550173", "nonFixedVoip"),
    ("+14155550174", "personal"),
    ("+14155550175", "tollFree"),
    ("+14155550176", "premium"),
    ("+14155550177", "sharedCost"),
    ("+14155550178", "uan"),
    ("+14155550179", "voicemail"),
    ("+14155550180", "pager"),
    ("+14155550181", "unknown"),
];
/// A mobile whose SIM was swapped in the period (`swapped_in_period`).
pub const SIM_SWAPPED: &str = "+14155550182";
/// A mobile whose `sms_pumping_risk_score` is 95.
pub const HIGH_PUMPING_RISK: &str = "+14155550183";
/// A lookup that fails: 503, Twilio error 20503.
pub const LOOKUP_FAILS: &str = "+14155550184";

/// One lookup the sandbox answered, for `/sandbox/lookups.json`: the
/// number masked, the packages asked for, the status answered.
#[derive(Debug, Clone, Serialize)]
pub struct LookupEntry {
    pub number: String,
    pub fields: Vec<String>,
    pub line_type: Option<String>,
    pub answered_status: u16,
}

/// The line type a number reports.
pub fn line_type_of(number: &str) -> &'static str {
    if let Some((_, t)) = LINE_TYPE_NUMBERS.iter().find(|(n, _)| *n == number) {
        return t;
    }
    if ["+441", "+442", "+443"]
        .iter()
        .any(|p| number.starts_with(p))
    {
        return "landline";
    }
    "mobile"
}

pub(crate) fn handle(state: &State, request: &Request<Incoming>, number: &str) -> Answer {
    if request.method() != Method::GET {
        return error(&TwilioError::method_not_allowed(request.method().as_str()));
    }
    let config = &state.config;
    let credentials = auth::basic(request.headers());
    if !auth::authorized(
        credentials.as_ref(),
        &config.account_sid,
        &config.auth_token,
    ) {
        return error(&TwilioError::authenticate());
    }
    let fields: Vec<String> = request
        .uri()
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == "Fields")
                .flat_map(|(_, v)| {
                    v.split(',')
                        .map(|f| f.trim().to_owned())
                        .collect::<Vec<_>>()
                })
                .filter(|f| !f.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let (status, body, line_type) = answer(number, &fields);
    state.lookups.push(LookupEntry {
        number: mask::phone(number),
        fields,
        line_type,
        answered_status: status.as_u16(),
    });
    json(status, &body)
}

/// Twilio's answer for `number` with the packages `fields`.
fn answer(number: &str, fields: &[String]) -> (StatusCode, Value, Option<String>) {
    if number == LOOKUP_FAILS {
        let e = json!({
            "code": 20503,
            "message": "Service unavailable (sandbox magic number)",
            "more_info": "https://www.twilio.com/docs/errors/20503",
            "status": 503
        });
        return (StatusCode::SERVICE_UNAVAILABLE, e, None);
    }
    let valid = number.starts_with('+')
        && (8..=16).contains(&number.len())
        && number[1..].bytes().all(|b| b.is_ascii_digit());
    let mut body = json!({
        "calling_country_code": null,
        "country_code": null,
        "phone_number": number,
        "national_format": null,
        "valid": valid,
        "validation_errors": if valid { json!([]) } else { json!(["NOT_A_NUMBER"]) },
        "caller_name": null,
        "sim_swap": null,
        "call_forwarding": null,
        "line_status": null,
        "line_type_intelligence": null,
        "identity_match": null,
        "reassigned_number": null,
        "sms_pumping_risk": null,
        "phone_number_quality_score": null,
        "pre_fill": null,
        "url": format!("https://lookups.twilio.com/v2/PhoneNumbers/{number}"),
    });
    if !valid {
        return (StatusCode::OK, body, None);
    }
    let mut line_type = None;
    for field in fields {
        match field.as_str() {
            "line_type_intelligence" => {
                let t = line_type_of(number);
                line_type = Some(t.to_owned());
                body["line_type_intelligence"] = json!({
                    "carrier_name": "Sandbox Carrier",
                    "error_code": null,
                    "mobile_country_code": "310",
                    "mobile_network_code": "456",
                    "type": t,
                });
            }
            "sim_swap" => {
                body["sim_swap"] = json!({
                    "last_sim_swap": {
                        "last_swap_date": null,
                        "swapped_period": "PT48H",
                        "swapped_in_period": number == SIM_SWAPPED,
                    },
                    "carrier_name": "Sandbox Carrier",
                    "mobile_country_code": "310",
                    "mobile_network_code": "456",
                    "error_code": null,
                });
            }
            "sms_pumping_risk" => {
                body["sms_pumping_risk"] = json!({
                    "carrier_risk_category": if number == HIGH_PUMPING_RISK { "high" } else { "low" },
                    "number_blocked": false,
                    "number_blocked_date": null,
                    "number_blocked_last_3_months": null,
                    "sms_pumping_risk_score": if number == HIGH_PUMPING_RISK { 95 } else { 10 },
                    "error_code": null,
                });
            }
            _ => {}
        }
    }
    (StatusCode::OK, body, line_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers_answer_as_documented() {
        let all: Vec<String> = ["line_type_intelligence", "sim_swap", "sms_pumping_risk"]
            .map(str::to_owned)
            .to_vec();
        for (n, t) in LINE_TYPE_NUMBERS {
            let (_, body, _) = answer(n, &all);
            assert_eq!(body["line_type_intelligence"]["type"], t);
        }
        assert_eq!(line_type_of("+442071234567"), "landline");
        assert_eq!(line_type_of("+447400123456"), "mobile");
        let (_, swapped, _) = answer(SIM_SWAPPED, &all);
        assert_eq!(
            swapped["sim_swap"]["last_sim_swap"]["swapped_in_period"],
            true
        );
        let (_, risky, _) = answer(HIGH_PUMPING_RISK, &all);
        assert_eq!(risky["sms_pumping_risk"]["sms_pumping_risk_score"], 95);
        let (status, _, _) = answer(LOOKUP_FAILS, &all);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        // Only the packages asked for.
        let (_, plain, _) = answer("+14155550123", &all[..1]);
        assert_eq!(plain["sim_swap"], Value::Null);
        assert_eq!(plain["line_type_intelligence"]["type"], "mobile");
    }
}
