//! `dashboard`: the live terminal view.

use crate::{
    args::DashboardArgs,
    error::{CliError, Result},
    home::ProjectHome,
};

pub async fn run(
    _home: &ProjectHome,
    _gateway: Option<String>,
    _args: DashboardArgs,
) -> Result<()> {
    Err(CliError::failed("the dashboard is not available yet"))
}
