//! `s3://bucket/prefix`: every object under the prefix, through `object_store`.
//!
//! Credentials: `--s3-access-key-id`/`--s3-secret-access-key` (or `AWS_ACCESS_KEY_ID`/
//! `AWS_SECRET_ACCESS_KEY`); without them, the AWS environment as the SDKs read it (web
//! identity for IRSA, container or instance credentials). `--s3-endpoint` (or
//! `AWS_ENDPOINT_URL`) points at an S3-compatible server, with path-style requests.
//!
//! Checks: each object's size from the listing, and its ETag as a precondition on every
//! read (`If-Match`), so a resumed download never stitches two versions of an object
//! together. S3 ETags are not verified as MD5 digests: multipart and KMS-encrypted objects
//! have ETags that are not.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, RetryConfig};

use super::download::Opened;
use super::error::{FetchError, FileFailure};
use super::http::{error_chain, install_crypto_provider};
use super::plan::{Location, RemoteFile};

/// How to reach the bucket; from the command line.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub allow_http: bool,
}

#[derive(Debug, Clone)]
pub struct S3Store {
    bucket: String,
    store: Arc<AmazonS3>,
}

impl S3Store {
    pub fn new(uri: &str, bucket: &str, options: &S3Options) -> Result<Self, FetchError> {
        install_crypto_provider();
        let mut builder = match (&options.access_key_id, &options.secret_access_key) {
            (Some(id), Some(secret)) => AmazonS3Builder::new()
                .with_access_key_id(id)
                .with_secret_access_key(secret),
            // The pod's AWS identity, however the environment provides it.
            _ => AmazonS3Builder::from_env(),
        };
        builder = builder
            .with_bucket_name(bucket)
            .with_allow_http(options.allow_http)
            // The fetcher retries (and resumes) itself; the store's own retries stay short.
            .with_retry(RetryConfig {
                max_retries: 2,
                ..RetryConfig::default()
            });
        if let Some(token) = &options.session_token {
            builder = builder.with_token(token);
        }
        if let Some(region) = &options.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &options.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        let store = builder.build().map_err(|e| FetchError::InvalidSource {
            uri: uri.to_string(),
            reason: error_chain(&e),
        })?;
        Ok(Self {
            bucket: bucket.to_string(),
            store: Arc::new(store),
        })
    }

    /// Every object under `prefix`, with paths relative to it.
    pub async fn list(&self, uri: &str, prefix: &str) -> Result<Vec<RemoteFile>, FetchError> {
        let listing = |reason: String| FetchError::Listing {
            uri: uri.to_string(),
            reason,
        };
        let prefix_path = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        let objects: Vec<_> = self
            .store
            .list(prefix_path.as_ref())
            .try_collect()
            .await
            .map_err(|e| listing(error_chain(&e)))?;
        let mut files = Vec::with_capacity(objects.len());
        for object in objects {
            let key = object.location.as_ref();
            let relative = match &prefix_path {
                Some(p) => key
                    .strip_prefix(p.as_ref())
                    .and_then(|rest| rest.strip_prefix('/'))
                    .ok_or_else(|| {
                        listing(format!("object '{key}' is outside prefix '{prefix}'"))
                    })?,
                None => key,
            };
            files.push(RemoteFile {
                path: relative.to_string(),
                size: Some(object.size),
                sha256: None,
                git_blob_sha1: None,
                location: Location::Object {
                    key: key.to_string(),
                    etag: object.e_tag.clone(),
                },
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Reads object `key` from byte `offset`, provided it still has `etag`.
    pub async fn open(
        &self,
        key: &str,
        etag: Option<&str>,
        offset: u64,
    ) -> Result<Opened, FileFailure> {
        let options = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            if_match: etag.map(str::to_string),
            ..GetOptions::default()
        };
        // Keys come from the listing, already in the store's own encoding.
        let path = ObjectPath::parse(key).map_err(|e| FileFailure::NotFound {
            location: format!("s3://{}/{key} ({e})", self.bucket),
        })?;
        let result = self
            .store
            .get_opts(&path, options)
            .await
            .map_err(|e| self.failure(key, e))?;
        let start = result.range.start;
        let total = Some(result.meta.size);
        let bucket = self.bucket.clone();
        let key = key.to_string();
        let body = result
            .into_stream()
            .map_err(move |e| {
                FileFailure::Transfer(format!("s3://{bucket}/{key}: {}", error_chain(&e)))
            })
            .boxed();
        Ok(Opened {
            start,
            total,
            sha256: None,
            body,
        })
    }

    fn failure(&self, key: &str, error: object_store::Error) -> FileFailure {
        let location = format!("s3://{}/{key}", self.bucket);
        match error {
            object_store::Error::NotFound { .. } => FileFailure::NotFound { location },
            object_store::Error::Precondition { .. } => {
                FileFailure::Changed(format!("{location}: ETag no longer matches the listing"))
            }
            other => FileFailure::Transfer(format!("{location}: {}", error_chain(&other))),
        }
    }
}
