//! Small value types that several rooms share (delivery, store, provider):
//! names of things, with no behaviour beyond naming them. They live here,
//! below every room, so that no room imports another one back.

/// Which endpoint the request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Sms,
    Voice,
}

impl Endpoint {
    /// The path, for logs and metrics.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Sms => "/v1/sms",
            Endpoint::Voice => "/v1/voice",
        }
    }
}

/// How a code is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Sms,
    Voice,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Voice => "voice",
        }
    }
}

/// Which limiter refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitName {
    Recipient,
    Ip,
    /// The one bucket of requests whose end-user address is not known.
    UnknownIp,
    /// A block of numbers (the number without its last few digits).
    Prefix,
    Country,
    Global,
}

impl LimitName {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitName::Recipient => "recipient",
            LimitName::Ip => "ip",
            LimitName::UnknownIp => "unknown_ip",
            LimitName::Prefix => "prefix",
            LimitName::Country => "country",
            LimitName::Global => "global",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetScope {
    Total,
    Country,
}

impl BudgetScope {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetScope::Total => "total",
            BudgetScope::Country => "country",
        }
    }
}

/// Kratos's code templates, and the rest by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateType {
    Login,
    Registration,
    Verification,
    Recovery,
    Other(String),
}

impl TemplateType {
    pub fn from_name(name: &str) -> TemplateType {
        match name {
            "login_code_valid" => TemplateType::Login,
            "registration_code_valid" => TemplateType::Registration,
            "verification_code_valid" => TemplateType::Verification,
            "recovery_code_valid" => TemplateType::Recovery,
            other => TemplateType::Other(other.to_owned()),
        }
    }

    /// A label safe for logs and metrics: Kratos's names for the four code
    /// templates, `other` for anything else (names are caller-chosen text).
    pub fn label(&self) -> &'static str {
        match self {
            TemplateType::Login => "login_code_valid",
            TemplateType::Registration => "registration_code_valid",
            TemplateType::Verification => "verification_code_valid",
            TemplateType::Recovery => "recovery_code_valid",
            TemplateType::Other(_) => "other",
        }
    }
}
