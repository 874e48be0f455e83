//! Twilio sandbox (placeholder until the real module lands).
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub account_sid: String,
    pub auth_token: String,
    pub inbox_capacity: usize,
}
impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            account_sid: format!("AC{}", "a".repeat(32)),
            auth_token: "sandbox-auth-token".into(),
            inbox_capacity: 1000,
        }
    }
}
#[derive(Clone)]
pub struct Sandbox;
impl Sandbox {
    pub fn new(_c: SandboxConfig) -> Self {
        Sandbox
    }
    pub async fn serve(
        &self,
        _l: tokio::net::TcpListener,
        s: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        s.await;
        Ok(())
    }
}
