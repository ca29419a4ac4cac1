//! `guestreset probe URL`: one HTTP GET with a timeout, for the chart's `helm test` hook
//! (docs/install.md, "Testing a release"). The image is distroless, without a shell or curl,
//! so the binary checks its own `/readyz` through the Service. Exit 0 on a 2xx answer;
//! otherwise exit 1 with one line on stderr saying why.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use reqwest::{StatusCode, Url};

use crate::plugin::error::with_causes;

/// How much of a refusing answer's body the reason quotes.
const BODY_QUOTE: usize = 200;

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// The http:// or https:// URL to GET, e.g. http://guestreset-metrics:8080/readyz.
    #[arg(value_parser = http_url)]
    pub url: Url,
    /// How long the whole request (connect, answer, body) may take.
    #[arg(long, default_value = "5s", value_parser = crate::cli::parse_timeout)]
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("GET {url}: {status}{}", quote(.body))]
    Status {
        url: Url,
        status: StatusCode,
        body: String,
    },
    #[error("GET {url}: no answer within {timeout:?}")]
    Timeout { url: Url, timeout: Duration },
    #[error("GET {url}: {reason}")]
    Request { url: Url, reason: String },
}

/// Runs the probe: exit 0 on 2xx, else 1 with the reason on stderr.
pub async fn run(args: &ProbeArgs) -> ExitCode {
    match probe(&args.url, args.timeout).await {
        Ok(status) => {
            println!("GET {}: {status}", args.url);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{}", one_line(&err.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// GETs `url` once; the status when it is 2xx.
pub async fn probe(url: &Url, timeout: Duration) -> Result<StatusCode, ProbeError> {
    let request_error = |e: reqwest::Error| match e.is_timeout() {
        true => ProbeError::Timeout {
            url: url.clone(),
            timeout,
        },
        false => ProbeError::Request {
            url: url.clone(),
            reason: with_causes(&e),
        },
    };
    // A probe checks the direct path to the Service: no proxy of the environment.
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .map_err(request_error)?;
    let answer = client
        .get(url.clone())
        .send()
        .await
        .map_err(request_error)?;
    let status = answer.status();
    if status.is_success() {
        return Ok(status);
    }
    let body = answer.text().await.unwrap_or_default();
    Err(ProbeError::Status {
        url: url.clone(),
        status,
        body,
    })
}

fn http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("must be http:// or https://, not {other}://")),
    }
}

fn quote(body: &str) -> String {
    let body = body.trim();
    match body.is_empty() {
        true => String::new(),
        false => format!(": {}", body.chars().take(BODY_QUOTE).collect::<String>()),
    }
}

/// A reason on one line, whatever the server put in its body.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
