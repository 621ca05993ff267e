//! Which `object_store` implementation a store URL opens, how it is
//! configured from the environment, and how it retries.
//!
//! One visible list of backends (see [`open`]):
//!
//! | URL | backend | cargo feature |
//! | --- | --- | --- |
//! | a path, `file://PATH` | [`LocalFileSystem`] | always |
//! | `memory://` | [`InMemory`] (tests) | always |
//! | `s3://BUCKET[/PREFIX]` | `AmazonS3` (AWS S3, MinIO, moto, …) | `s3` |
//! | `az://CONTAINER[/PREFIX]`, `azure://…` | `MicrosoftAzure` (Azure Blob, Azurite) | `azure` |
//! | `gs://BUCKET[/PREFIX]` | `GoogleCloudStorage` | `gcp` |
//!
//! A `PREFIX` puts the whole store under that key prefix of the bucket
//! (a [`PrefixStore`]), so several stores can share one bucket; keys and
//! listings inside the store never show it, exactly as with a folder.
//!
//! Credentials and endpoints come from the standard environment variables
//! of each cloud (`AWS_…`, `AZURE_…`, `GOOGLE_…`), read by `object_store`'s
//! `from_env` builders. Before anything is sent, [`open`] checks that some
//! credential is configured: without one, `object_store` would fall back to
//! the cloud's instance-metadata endpoint, which off the cloud only fails
//! after a timeout with an obscure message. Instance credentials stay
//! available, but must be asked for (`AWS_METADATA_ENDPOINT`,
//! `AZURE_CREDENTIAL_TYPE=managed_identity` or `IDENTITY_ENDPOINT`).
//!
//! # Retries
//! Every request to a cloud store is retried by `object_store` on server
//! errors (5xx), throttling (429), request timeouts and connection errors
//! (a request that may have reached the server only if it is idempotent, as
//! fleetscore's whole-object puts, gets, lists and deletes are), with
//! exponential backoff and jitter, within both a count and a total time.
//! [`RetrySettings`] has the defaults and their reasons, and the
//! `FLEETSCORE_STORE_…` variables that override them.

#[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
use std::sync::Arc;
use std::time::Duration;

#[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
use object_store::{prefix::PrefixStore, BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};

/// A snapshot of environment variables (the process's, or given ones).
#[derive(Clone, Debug, Default)]
pub(crate) struct Env(Vec<(String, String)>);

impl Env {
    /// The process's environment (variables that are valid UTF-8).
    pub(crate) fn process() -> Env {
        Env(std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect())
    }

    pub(crate) fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Env {
        Env(pairs.into_iter().collect())
    }

    /// A variable's value; the last one wins, an empty one counts as unset.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    #[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
    fn is_true(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
    }

    #[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
    fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0
            .iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// How requests to a cloud store are retried and timed out.
///
/// The defaults suit fleetscore's batch jobs: a job scores a window that
/// closed minutes ago, on a schedule measured in hours, so a store request
/// is worth retrying for a few minutes (a throttling burst, a brief outage,
/// a dropped connection) rather than failing the task at the first error,
/// but not forever: a task that still cannot reach the store fails, and
/// the job's own task retries (`max_retries`, default 2, with backoff) try
/// the whole task again later. With the defaults one request waits at most
/// about 3 minutes before its error surfaces; a task with its two retries
/// at most about 10.
///
/// | setting | default | environment variable |
/// | --- | --- | --- |
/// | [`max_retries`](Self::max_retries) | 10 | `FLEETSCORE_STORE_MAX_RETRIES` |
/// | [`retry_timeout`](Self::retry_timeout) | 3m | `FLEETSCORE_STORE_RETRY_TIMEOUT` |
/// | [`backoff`](Self::backoff) | 200ms | `FLEETSCORE_STORE_BACKOFF` |
/// | [`max_backoff`](Self::max_backoff) | 20s | `FLEETSCORE_STORE_MAX_BACKOFF` |
/// | [`request_timeout`](Self::request_timeout) | 60s | `FLEETSCORE_STORE_TIMEOUT` |
/// | [`connect_timeout`](Self::connect_timeout) | 5s | `FLEETSCORE_STORE_CONNECT_TIMEOUT` |
///
/// Durations are written as `500ms`, `30s`, `3m`, `1h`. A program can start
/// from other values ([`Store::open_with`](crate::Store::open_with); the
/// fleetscore binary takes them from its config's `[store]` section); the
/// variables override whatever it passes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySettings {
    /// Retries of one request after its first attempt (0: none). Ten
    /// doublings from `backoff` reach `max_backoff`, so the count rarely
    /// binds before `retry_timeout` does in a long outage, while a burst of
    /// errors on a healthy store is absorbed.
    pub max_retries: usize,
    /// No retry starts later than this after the request's first attempt.
    /// Kept under 5 minutes: a retried request reuses its signature, which
    /// cloud stores accept for about that long.
    pub retry_timeout: Duration,
    /// Wait before the first retry; it doubles (with jitter) per retry.
    /// 200 ms lets a throttled store recover before the next attempt.
    pub backoff: Duration,
    /// Longest wait between two retries.
    pub max_backoff: Duration,
    /// Time for one whole request, body included. 60 s, twice
    /// `object_store`'s default, so that a part of tens of MB on a slow link
    /// is not cut off; a hung connection costs at most that before its retry.
    pub request_timeout: Duration,
    /// Time to open a connection; an endpoint that does not answer in 5 s
    /// is down or wrong, and the retry tries again.
    pub connect_timeout: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(20),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl RetrySettings {
    /// The defaults, overridden by the `FLEETSCORE_STORE_…` variables of
    /// the process's environment.
    pub fn from_env() -> Result<RetrySettings, String> {
        RetrySettings::default().overridden_by_env()
    }

    /// These settings (from a config file, say), overridden by the
    /// `FLEETSCORE_STORE_…` variables of the process's environment.
    pub fn overridden_by_env(self) -> Result<RetrySettings, String> {
        self.overridden_by(&Env::process())
    }

    #[cfg(test)]
    pub(crate) fn from(env: &Env) -> Result<RetrySettings, String> {
        RetrySettings::default().overridden_by(env)
    }

    pub(crate) fn overridden_by(self, env: &Env) -> Result<RetrySettings, String> {
        let mut s = self;
        let dur = |key: &str, d: &mut Duration| -> Result<(), String> {
            if let Some(v) = env.get(key) {
                *d = humantime::parse_duration(v.trim()).map_err(|e| {
                    format!("{key}={v:?} is not a duration ({e}); write it as 500ms, 30s or 3m")
                })?;
            }
            Ok(())
        };
        if let Some(v) = env.get("FLEETSCORE_STORE_MAX_RETRIES") {
            s.max_retries = v.trim().parse().map_err(|_| {
                format!("FLEETSCORE_STORE_MAX_RETRIES={v:?} is not a count (0 or more)")
            })?;
        }
        dur("FLEETSCORE_STORE_RETRY_TIMEOUT", &mut s.retry_timeout)?;
        dur("FLEETSCORE_STORE_BACKOFF", &mut s.backoff)?;
        dur("FLEETSCORE_STORE_MAX_BACKOFF", &mut s.max_backoff)?;
        dur("FLEETSCORE_STORE_TIMEOUT", &mut s.request_timeout)?;
        dur("FLEETSCORE_STORE_CONNECT_TIMEOUT", &mut s.connect_timeout)?;
        if s.max_backoff < s.backoff {
            s.max_backoff = s.backoff;
        }
        Ok(s)
    }

    #[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
    fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.backoff,
                max_backoff: self.max_backoff,
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }

    /// The client options as `(key, value)` settings, applied on top of
    /// those from the environment (a builder's `with_client_options` would
    /// replace them, `AWS_ALLOW_HTTP` included).
    #[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
    fn client_config(&self) -> [(ClientConfigKey, String); 2] {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        [
            (ClientConfigKey::Timeout, ms(self.request_timeout)),
            (ClientConfigKey::ConnectTimeout, ms(self.connect_timeout)),
        ]
    }
}

/// A cloud URL taken apart: `scheme://BUCKET[/PREFIX]`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CloudUrl<'a> {
    pub scheme: &'a str,
    pub bucket: &'a str,
    pub prefix: &'a str,
}

/// Splits `scheme://bucket/prefix`; `None` if `url` has no `://`.
pub(crate) fn split(url: &str) -> Option<CloudUrl<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    Some(CloudUrl {
        scheme,
        bucket,
        prefix: prefix.trim_matches('/'),
    })
}

/// What to name in an error about a URL's bucket, per scheme.
fn bucket_word(scheme: &str) -> &'static str {
    match scheme {
        "az" | "azure" => "container",
        _ => "bucket",
    }
}

#[cfg(test)]
fn open_cloud(
    url: &CloudUrl<'_>,
    env: &Env,
) -> Result<std::sync::Arc<dyn object_store::ObjectStore>, String> {
    open_cloud_with(url, env, &RetrySettings::default())
}

/// Opens a cloud store URL (`s3://`, `az://`, `azure://`, `gs://`) with
/// `retry` overridden by `env`'s `FLEETSCORE_STORE_…` variables; the error
/// is the reason, meant to follow "store URL: ".
pub(crate) fn open_cloud_with(
    url: &CloudUrl<'_>,
    env: &Env,
    retry: &RetrySettings,
) -> Result<std::sync::Arc<dyn object_store::ObjectStore>, String> {
    let word = bucket_word(url.scheme);
    if url.bucket.is_empty() {
        return Err(format!(
            "no {word} named; write {}://{}[/PREFIX]",
            url.scheme,
            word.to_uppercase()
        ));
    }
    if url.prefix.split('/').any(|s| s == "." || s == "..") {
        return Err("the prefix may not contain . or .. segments".into());
    }
    let settings = retry.clone().overridden_by(env)?;
    let store = match url.scheme {
        "s3" => open_s3(url.bucket, env, &settings)?,
        "az" | "azure" => open_azure(url.bucket, env, &settings)?,
        "gs" => open_gcs(url.bucket, env, &settings)?,
        other => return Err(format!("unknown scheme {other}://")),
    };
    #[cfg(any(feature = "s3", feature = "azure", feature = "gcp"))]
    {
        Ok(if url.prefix.is_empty() {
            store
        } else {
            Arc::new(PrefixStore::new(store, url.prefix))
        })
    }
    #[cfg(not(any(feature = "s3", feature = "azure", feature = "gcp")))]
    {
        let _ = settings;
        Ok(store)
    }
}

#[cfg(feature = "s3")]
fn open_s3(
    bucket: &str,
    env: &Env,
    settings: &RetrySettings,
) -> Result<Arc<dyn ObjectStore>, String> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let has = |k: &str| env.get(k).is_some();
    let credentialed = (has("AWS_ACCESS_KEY_ID") && has("AWS_SECRET_ACCESS_KEY"))
        || (has("AWS_WEB_IDENTITY_TOKEN_FILE") && has("AWS_ROLE_ARN"))
        || has("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || has("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        || has("AWS_METADATA_ENDPOINT")
        || env.is_true("AWS_SKIP_SIGNATURE");
    if !credentialed {
        let half = if has("AWS_ACCESS_KEY_ID") {
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not; "
        } else if has("AWS_SECRET_ACCESS_KEY") {
            "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not; "
        } else {
            ""
        };
        return Err(format!(
            "no S3 credentials: {half}set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
             (and AWS_REGION; AWS_ENDPOINT_URL and AWS_ALLOW_HTTP=true for MinIO or an \
             emulator), or AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (Kubernetes), or \
             AWS_METADATA_ENDPOINT=http://169.254.169.254 to use the EC2 instance's role"
        ));
    }
    let mut b = AmazonS3Builder::new();
    for (k, v) in env.with_prefix("AWS_") {
        if let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            b = b.with_config(key, v);
        }
    }
    for (k, v) in settings.client_config() {
        b = b.with_config(AmazonS3ConfigKey::Client(k), v);
    }
    let s3 = b
        .with_bucket_name(bucket)
        .with_retry(settings.retry_config())
        .build()
        .map_err(|e| format!("cannot configure S3: {e}"))?;
    Ok(Arc::new(s3))
}

#[cfg(not(feature = "s3"))]
fn open_s3(
    _: &str,
    _: &Env,
    _: &RetrySettings,
) -> Result<std::sync::Arc<dyn object_store::ObjectStore>, String> {
    Err(not_built("s3://", "s3"))
}

#[cfg(feature = "azure")]
fn open_azure(
    container: &str,
    env: &Env,
    settings: &RetrySettings,
) -> Result<Arc<dyn ObjectStore>, String> {
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    let has = |k: &str| env.get(k).is_some();
    let emulator = env.is_true("AZURE_STORAGE_USE_EMULATOR");
    if !emulator && !has("AZURE_STORAGE_ACCOUNT_NAME") {
        return Err(
            "no Azure storage account: set AZURE_STORAGE_ACCOUNT_NAME and a credential \
             (AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN, …), or \
             AZURE_STORAGE_USE_EMULATOR=true for Azurite on 127.0.0.1:10000"
                .into(),
        );
    }
    let credentialed = emulator
        || has("AZURE_STORAGE_ACCOUNT_KEY")
        || has("AZURE_STORAGE_ACCESS_KEY")
        || has("AZURE_STORAGE_SAS_TOKEN")
        || has("AZURE_STORAGE_SAS_KEY")
        || has("AZURE_STORAGE_TOKEN")
        || ((has("AZURE_CLIENT_ID") || has("AZURE_STORAGE_CLIENT_ID"))
            && (has("AZURE_TENANT_ID") || has("AZURE_STORAGE_TENANT_ID"))
            && (has("AZURE_CLIENT_SECRET")
                || has("AZURE_STORAGE_CLIENT_SECRET")
                || has("AZURE_FEDERATED_TOKEN_FILE")))
        || env.is_true("AZURE_USE_AZURE_CLI")
        || env.is_true("AZURE_SKIP_SIGNATURE")
        || has("AZURE_CREDENTIAL_TYPE")
        || has("AZURE_MSI_ENDPOINT")
        || has("IDENTITY_ENDPOINT");
    if !credentialed {
        return Err("no Azure credentials: set AZURE_STORAGE_ACCOUNT_KEY (or \
             AZURE_STORAGE_SAS_TOKEN; or AZURE_CLIENT_ID, AZURE_TENANT_ID and \
             AZURE_CLIENT_SECRET or AZURE_FEDERATED_TOKEN_FILE), or \
             AZURE_CREDENTIAL_TYPE=managed_identity to use the VM's or pod's identity"
            .into());
    }
    let mut b = MicrosoftAzureBuilder::new();
    for (k, v) in env.with_prefix("AZURE_") {
        if let Ok(key) = k.to_ascii_lowercase().parse::<AzureConfigKey>() {
            b = b.with_config(key, v);
        }
    }
    if let Some(v) = env.get("IDENTITY_ENDPOINT") {
        b = b.with_msi_endpoint(v);
    }
    for (k, v) in settings.client_config() {
        b = b.with_config(AzureConfigKey::Client(k), v);
    }
    let az = b
        .with_container_name(container)
        .with_retry(settings.retry_config())
        .build()
        .map_err(|e| format!("cannot configure Azure Blob storage: {e}"))?;
    Ok(Arc::new(az))
}

#[cfg(not(feature = "azure"))]
fn open_azure(
    _: &str,
    _: &Env,
    _: &RetrySettings,
) -> Result<std::sync::Arc<dyn object_store::ObjectStore>, String> {
    Err(not_built("az://", "azure"))
}

#[cfg(feature = "gcp")]
fn open_gcs(
    bucket: &str,
    env: &Env,
    settings: &RetrySettings,
) -> Result<Arc<dyn ObjectStore>, String> {
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
    let has = |k: &str| env.get(k).is_some();
    let credentialed = has("GOOGLE_SERVICE_ACCOUNT")
        || has("GOOGLE_SERVICE_ACCOUNT_PATH")
        || has("GOOGLE_SERVICE_ACCOUNT_KEY")
        || has("GOOGLE_APPLICATION_CREDENTIALS")
        || has("GOOGLE_BEARER_TOKEN")
        || env.is_true("GOOGLE_SKIP_SIGNATURE");
    if !credentialed {
        return Err(
            "no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS (or \
             GOOGLE_SERVICE_ACCOUNT) to a service account key file"
                .into(),
        );
    }
    let mut b = GoogleCloudStorageBuilder::new();
    for (k, v) in env.with_prefix("GOOGLE_") {
        if let Ok(key) = k.to_ascii_lowercase().parse::<GoogleConfigKey>() {
            b = b.with_config(key, v);
        }
    }
    for (k, v) in settings.client_config() {
        b = b.with_config(GoogleConfigKey::Client(k), v);
    }
    let gcs = b
        .with_bucket_name(bucket)
        .with_retry(settings.retry_config())
        .build()
        .map_err(|e| format!("cannot configure Google Cloud Storage: {e}"))?;
    Ok(Arc::new(gcs))
}

#[cfg(not(feature = "gcp"))]
fn open_gcs(
    _: &str,
    _: &Env,
    _: &RetrySettings,
) -> Result<std::sync::Arc<dyn object_store::ObjectStore>, String> {
    Err(not_built("gs://", "gcp"))
}

#[cfg(not(all(feature = "s3", feature = "azure", feature = "gcp")))]
fn not_built(scheme: &str, feature: &str) -> String {
    format!(
        "{scheme} stores are not in this build of fleetscore; build it with the cargo feature \
         `{feature}` (a default feature of the fleetscore binary), or use a local folder"
    )
}

/// Whether an error says that the bucket or container itself is missing
/// (cloud stores answer 404 for it, as for a missing object).
pub(crate) fn missing_bucket(err: &object_store::Error) -> bool {
    let text = err.to_string();
    text.contains("NoSuchBucket")
        || text.contains("ContainerNotFound")
        || text.contains("bucket does not exist")
}

/// A hint for a backend error that has a usual cause, or "".
pub(crate) fn hint(url: &str, err: &object_store::Error) -> &'static str {
    let text = err.to_string();
    let has = |s: &str| text.contains(s);
    if has("conditional put is disabled") {
        " (registry writes need conditional writes: unset AWS_CONDITIONAL_PUT, or set it to \
         `etag`, on a store that honours If-Match, as AWS S3, MinIO and R2 do)"
    } else if has("NoSuchBucket") || has("bucket does not exist") {
        " (the bucket does not exist: create it, or fix the bucket in the store URL)"
    } else if has("ContainerNotFound") {
        " (the container does not exist: create it, or fix the container in the store URL)"
    } else if has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("AuthenticationFailed")
        || has("AuthorizationFailure")
        || has("403 Forbidden")
    {
        if url.starts_with("s3://") {
            " (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION)"
        } else if url.starts_with("az") {
            " (check AZURE_STORAGE_ACCOUNT_NAME and its credential)"
        } else {
            " (check the store's credentials)"
        }
    } else if has("error sending request")
        || has("Connection refused")
        || has("tcp connect error")
        || has("dns error")
    {
        " (the store's endpoint did not answer: check the endpoint variable and the network)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        let u = split("s3://b/some/prefix/").unwrap();
        assert_eq!((u.scheme, u.bucket, u.prefix), ("s3", "b", "some/prefix"));
        let u = split("az://c").unwrap();
        assert_eq!((u.scheme, u.bucket, u.prefix), ("az", "c", ""));
        assert!(split("/a/path").is_none());
    }

    #[test]
    fn retry_settings_default_and_from_env() {
        assert_eq!(
            RetrySettings::from(&env(&[])).unwrap(),
            RetrySettings::default()
        );
        let s = RetrySettings::from(&env(&[
            ("FLEETSCORE_STORE_MAX_RETRIES", "2"),
            ("FLEETSCORE_STORE_RETRY_TIMEOUT", "5s"),
            ("FLEETSCORE_STORE_BACKOFF", "10ms"),
            ("FLEETSCORE_STORE_TIMEOUT", "1m 30s"),
        ]))
        .unwrap();
        assert_eq!(s.max_retries, 2);
        assert_eq!(s.retry_timeout, Duration::from_secs(5));
        assert_eq!(s.backoff, Duration::from_millis(10));
        assert_eq!(s.request_timeout, Duration::from_secs(90));
        assert_eq!(s.connect_timeout, Duration::from_secs(5));
        let e =
            RetrySettings::from(&env(&[("FLEETSCORE_STORE_RETRY_TIMEOUT", "soon")])).unwrap_err();
        assert!(
            e.contains("FLEETSCORE_STORE_RETRY_TIMEOUT") && e.contains("30s"),
            "{e}"
        );
        let e = RetrySettings::from(&env(&[("FLEETSCORE_STORE_MAX_RETRIES", "-1")])).unwrap_err();
        assert!(e.contains("FLEETSCORE_STORE_MAX_RETRIES"), "{e}");
    }

    #[test]
    fn a_url_without_a_bucket_says_how_to_write_one() {
        let e = open_cloud(&split("s3://").unwrap(), &env(&[]))
            .err()
            .unwrap();
        assert!(e.contains("s3://BUCKET[/PREFIX]"), "{e}");
        let e = open_cloud(&split("az:///p").unwrap(), &env(&[]))
            .err()
            .unwrap();
        assert!(e.contains("az://CONTAINER[/PREFIX]"), "{e}");
    }

    #[cfg(feature = "s3")]
    #[test]
    fn s3_without_credentials_says_what_to_set() {
        let e = open_cloud(
            &split("s3://b/p").unwrap(),
            &env(&[("AWS_REGION", "eu-west-1")]),
        )
        .err()
        .unwrap();
        assert!(
            e.contains("AWS_ACCESS_KEY_ID") && e.contains("AWS_SECRET_ACCESS_KEY"),
            "{e}"
        );
        let e = open_cloud(
            &split("s3://b").unwrap(),
            &env(&[("AWS_ACCESS_KEY_ID", "k")]),
        )
        .err()
        .unwrap();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY is not"), "{e}");
        let ok = env(&[
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_ALLOW_HTTP", "true"),
        ]);
        assert!(open_cloud(&split("s3://b/p").unwrap(), &ok).is_ok());
    }

    #[cfg(feature = "azure")]
    #[test]
    fn azure_without_credentials_says_what_to_set() {
        let e = open_cloud(&split("az://c").unwrap(), &env(&[]))
            .err()
            .unwrap();
        assert!(
            e.contains("AZURE_STORAGE_ACCOUNT_NAME") && e.contains("AZURE_STORAGE_USE_EMULATOR"),
            "{e}"
        );
        let e = open_cloud(
            &split("azure://c").unwrap(),
            &env(&[("AZURE_STORAGE_ACCOUNT_NAME", "acct")]),
        )
        .err()
        .unwrap();
        assert!(e.contains("AZURE_STORAGE_ACCOUNT_KEY"), "{e}");
        let ok = env(&[("AZURE_STORAGE_USE_EMULATOR", "true")]);
        assert!(open_cloud(&split("az://c/p").unwrap(), &ok).is_ok());
    }

    #[cfg(feature = "gcp")]
    #[test]
    fn gcs_without_credentials_says_what_to_set() {
        let e = open_cloud(&split("gs://b").unwrap(), &env(&[]))
            .err()
            .unwrap();
        assert!(e.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{e}");
    }

    #[cfg(not(feature = "s3"))]
    #[test]
    fn s3_without_the_feature_names_it() {
        let e = open_cloud(&split("s3://b").unwrap(), &env(&[]))
            .err()
            .unwrap();
        assert!(e.contains("`s3`"), "{e}");
    }
}
