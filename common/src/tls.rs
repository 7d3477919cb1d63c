//! The client side of TLS, for agents and the admin CLI: the CA that signed the
//! registry's certificate, and our own certificate for mutual TLS.

use std::path::PathBuf;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::fs::{ReadError, read};

/// PEM files of a TLS client.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("a client certificate needs both a certificate file and a key file")]
    Half,
}

impl ClientTls {
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    pub fn config(&self) -> Result<ClientTlsConfig, ClientTlsError> {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => config = config.identity(Identity::from_pem(read(c)?, read(k)?)),
            (None, None) => {}
            _ => return Err(ClientTlsError::Half),
        }
        Ok(config)
    }
}
