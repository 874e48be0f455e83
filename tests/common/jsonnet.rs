//! Render the Kratos courier Jsonnet templates the way Kratos does.
//!
//! Kratos (`request/builder.go`) encodes the courier message as JSON, hands it
//! to the template as the top-level argument `ctx` (`vm.TLACode("ctx", json)`)
//! and evaluates the template file as an anonymous snippet with imports
//! disabled. This does the same with jrsonnet, a Rust Jsonnet engine that
//! follows the same language and standard library as go-jsonnet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jrsonnet_evaluator::manifest::JsonFormat;
use jrsonnet_evaluator::tla::TlaArg;
use jrsonnet_evaluator::trace::PathResolver;
use jrsonnet_evaluator::{apply_tla, IStr, State};
use serde_json::Value;

/// The repository root (where `Cargo.toml` is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kratos/<name>` in the repository.
pub fn kratos_file(name: &str) -> PathBuf {
    repo_root().join("kratos").join(name)
}

/// The `ctx` Kratos builds for one message, from `tests/fixtures/kratos/<name>.json`
/// (`login`, `registration`, `verification`, `recovery`).
pub fn fixture(name: &str) -> Value {
    let path = repo_root()
        .join("tests/fixtures/kratos")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Names of the Kratos fixtures, one per code template type.
pub const FIXTURES: [&str; 4] = ["login", "registration", "verification", "recovery"];

/// Evaluate the Jsonnet template at `template` with `ctx` as its top-level
/// argument and return the JSON it produces (what Kratos would POST).
///
/// An evaluation error (which in Kratos aborts the send) is returned as text.
pub fn render(template: &Path, ctx: &Value) -> Result<Value, String> {
    let code = std::fs::read_to_string(template)
        .map_err(|e| format!("reading {}: {e}", template.display()))?;
    render_str(&template.display().to_string(), &code, ctx)
}

/// Like [`render`], for a template given as text.
// jrsonnet's API takes a HashMap keyed by its interned strings (IStr), whose
// hash does not change; jrsonnet allows this lint itself.
#[allow(clippy::mutable_key_type)]
pub fn render_str(name: &str, code: &str, ctx: &Value) -> Result<Value, String> {
    let mut builder = State::builder();
    builder.context_initializer(jrsonnet_stdlib::ContextInitializer::new(
        PathResolver::FileName,
    ));
    let state = builder.build();
    let _entered = state.enter();

    let template = state
        .evaluate_snippet(name, code)
        .map_err(|e| format!("evaluating {name}: {e}"))?;
    // Like TLACode: the JSON text of the message, evaluated as Jsonnet code.
    let ctx_json = serde_json::to_string(ctx).map_err(|e| e.to_string())?;
    let ctx_val = state
        .evaluate_snippet("<ctx>", ctx_json)
        .map_err(|e| format!("evaluating ctx: {e}"))?;

    let mut args = HashMap::new();
    args.insert(IStr::from("ctx"), TlaArg::Val(ctx_val));
    let out = apply_tla(&args, template).map_err(|e| format!("calling {name}: {e}"))?;
    let text = out
        .manifest(JsonFormat::default())
        .map_err(|e| format!("manifesting {name}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("output of {name} is not JSON: {e}\n{text}"))
}

/// Render `kratos/<template>` (for example `courier-sms.jsonnet`) for `ctx`,
/// panicking on an evaluation error.
pub fn render_kratos(template: &str, ctx: &Value) -> Value {
    render(&kratos_file(template), ctx).unwrap_or_else(|e| panic!("{e}"))
}
