//! kratos-phone-courier
pub mod sandbox;
