//! kratos-phone-courier
pub mod sandbox;
pub mod signature;
