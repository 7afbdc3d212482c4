//! From the SDK's `SdkError` to [`CloudError`], with secrets removed.

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use ccm_cloud::CloudError;

/// Removes configured secret values from text (on top of [`ccm_cloud::sanitize_message`],
/// which masks access key ids), so that no error or log line carries a credential.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub(crate) fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        Self {
            // Very short "secrets" would blank out ordinary words; real ones are long.
            secrets: secrets.into_iter().filter(|s| s.len() >= 8).collect(),
        }
    }

    pub(crate) fn clean(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }
}

/// Maps an SDK error of `operation` to a [`CloudError`].
///
/// Service errors map by their AWS code ([`CloudError::from_aws`]). An HTTP 500 or 501 without
/// any AWS error code means the endpoint did not answer in AWS's error format at all, which is
/// how emulators such as moto answer operations they do not implement; that becomes
/// [`CloudError::Unsupported`] (real AWS always sends a code, e.g. `InternalError`).
pub(crate) fn map_sdk_error<E, R>(
    operation: &str,
    err: SdkError<E, R>,
    redactor: &Redactor,
) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    let status = err.raw_response().map(HttpStatus::status_code);
    match &err {
        SdkError::ServiceError(service) => {
            let code = service.err().code();
            let message = service.err().message().map(|m| redactor.clean(m));
            match (code, status) {
                (None, Some(500 | 501)) => CloudError::Unsupported {
                    operation: operation.to_owned(),
                    message: format!(
                        "HTTP {} without an AWS error code; the endpoint probably does not implement it",
                        status.unwrap_or(500)
                    ),
                },
                _ => CloudError::from_aws(code, message.as_deref(), status),
            }
        }
        SdkError::TimeoutError(_) => CloudError::Unavailable {
            message: format!("{operation} timed out (aws.operation_timeout)"),
            retry_in: None,
        },
        SdkError::DispatchFailure(failure) => {
            let detail = redactor.clean(&DisplayErrorContext(&err).to_string());
            if looks_like_credentials_problem(&detail) {
                return CloudError::Auth {
                    code: "NoCredentials".to_owned(),
                    message: ccm_cloud::sanitize_message(&detail),
                };
            }
            let what = if failure.is_timeout() {
                "timed out (aws.connect_timeout / aws.read_timeout)"
            } else if failure.is_io() {
                "could not reach the endpoint"
            } else {
                "failed to send"
            };
            CloudError::unavailable(format!("{operation} {what}: {detail}"))
        }
        SdkError::ResponseError(_) => {
            let detail = redactor.clean(&DisplayErrorContext(&err).to_string());
            match status {
                Some(500 | 501) => CloudError::Unsupported {
                    operation: operation.to_owned(),
                    message: format!(
                        "unreadable HTTP {} answer; the endpoint probably does not implement it",
                        status.unwrap_or(500)
                    ),
                },
                _ => CloudError::unavailable(format!(
                    "{operation}: unreadable response (HTTP {}): {detail}",
                    status.map_or_else(|| "?".to_owned(), |s| s.to_string())
                )),
            }
        }
        SdkError::ConstructionFailure(_) => {
            let detail = redactor.clean(&DisplayErrorContext(&err).to_string());
            if looks_like_credentials_problem(&detail) {
                CloudError::Auth {
                    code: "NoCredentials".to_owned(),
                    message: ccm_cloud::sanitize_message(&detail),
                }
            } else {
                CloudError::InvalidParameter {
                    code: "RequestConstruction".to_owned(),
                    message: ccm_cloud::sanitize_message(&format!("{operation}: {detail}")),
                }
            }
        }
        _ => {
            let detail = redactor.clean(&DisplayErrorContext(&err).to_string());
            CloudError::Other {
                code: "Sdk".to_owned(),
                message: ccm_cloud::sanitize_message(&format!("{operation}: {detail}")),
            }
        }
    }
}

fn looks_like_credentials_problem(detail: &str) -> bool {
    let lower = detail.to_ascii_lowercase();
    lower.contains("credentials") && !lower.contains("connection")
        || lower.contains("no credentials")
        || lower.contains("identity")
}

/// The HTTP status of the SDK's raw response type.
pub(crate) trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_ec2::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_secrets_should_be_removed_from_text() {
        let r = Redactor::new(["wJalrXUtnFEMI/K7MDENG".to_owned(), "short".to_owned()]);
        assert_eq!(
            r.clean("bad key wJalrXUtnFEMI/K7MDENG here, short stays"),
            "bad key *** here, short stays"
        );
    }
}
