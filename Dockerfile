# kratos-phone-courier container image.
#
# Two stages: a Rust build stage, and a distroless runtime that holds only the
# two binaries (kratos-phone-courier and twilio-sandbox), a minimal config file
# and the C runtime libraries. No shell, no package manager, no CA bundle:
# reqwest uses rustls with the webpki roots compiled in.
#
#   docker build -t kratos-phone-courier .
#   docker run --rm -p 4470:4470 -e PHONE_COURIER__TWILIO__ACCOUNT_SID=AC... \
#     -e PHONE_COURIER__TWILIO__AUTH_TOKEN=... -e PHONE_COURIER__TWILIO__FROM=+1... \
#     -e PHONE_COURIER__AUTH__BASIC__USERNAME=kratos \
#     -e PHONE_COURIER__AUTH__BASIC__PASSWORD=... kratos-phone-courier

# ---------------------------------------------------------------- build stage
FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, with placeholder sources: this layer is rebuilt only
# when a manifest or Cargo.lock changes, not on every source edit. The
# workspace has two members: the service and the Twilio stand-in.
COPY Cargo.toml Cargo.lock ./
COPY twilio-sandbox/Cargo.toml twilio-sandbox/
RUN mkdir -p src/bin/kratos-phone-courier twilio-sandbox/src \
 && echo 'fn main() {}' > src/bin/kratos-phone-courier/main.rs \
 && echo 'fn main() {}' > twilio-sandbox/src/main.rs \
 && touch src/lib.rs twilio-sandbox/src/lib.rs \
 && cargo build --release --locked --workspace --bins \
 && rm -rf src twilio-sandbox/src

# The real sources (schemas/ and config/ are compiled into the binaries).
COPY src ./src
COPY twilio-sandbox/src ./twilio-sandbox/src
COPY schemas ./schemas
COPY config ./config
# Make sure cargo sees the sources as newer than the placeholder build.
RUN touch src/bin/kratos-phone-courier/main.rs src/lib.rs twilio-sandbox/src/main.rs twilio-sandbox/src/lib.rs \
 && cargo build --release --locked --workspace --bins \
 && mkdir -p /out/bin /out/etc/phone-courier \
 && cp target/release/kratos-phone-courier target/release/twilio-sandbox /out/bin/ \
 && printf '%s\n' \
    '# kratos-phone-courier configuration inside the container.' \
    '# Built-in defaults apply to every key not set here; environment variables' \
    '# PHONE_COURIER__SECTION__KEY override this file. Mount your own file on' \
    '# /etc/phone-courier/config.toml to replace it.' \
    '' \
    '[server]' \
    '# In a container the port must be reachable from other containers.' \
    'listen = "0.0.0.0:4470"' \
    > /out/etc/phone-courier/config.toml

# -------------------------------------------------------------- runtime stage
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /out/bin/kratos-phone-courier /out/bin/twilio-sandbox /usr/local/bin/
COPY --from=build /out/etc/phone-courier/config.toml /etc/phone-courier/config.toml

# The distroless "nonroot" user (uid 65532): the service needs no privileges.
USER nonroot:nonroot

# The courier API (POST /v1/sms, POST /v1/voice, GET /health/*).
EXPOSE 4470

# Distroless has no curl: the binary probes itself. `healthcheck` exits 0 when
# the URL answers 2xx within its timeout, 1 otherwise.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["kratos-phone-courier", "healthcheck", "--url", "http://127.0.0.1:4470/health/ready"]

ENTRYPOINT ["kratos-phone-courier"]
CMD ["serve", "--config", "/etc/phone-courier/config.toml"]
