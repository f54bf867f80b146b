//! What `ms365-gateway demo` prints once everything is ready: where to sign in, the admin
//! page and token, the emulator, what the first sync did, and how to stop. The labels are
//! stable (the integration test reads them); the last line is [`READY_LINE`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::tenant::FirstSync;
use super::{SIP_DOMAIN, Services, files};
use crate::config::{Config, ListenerKind};

/// The banner's last line: everything is up.
pub const READY_LINE: &str = "Press Ctrl-C to stop.";

/// The URLs, the token and the first sync's counts.
#[derive(Debug, Clone, Default)]
pub struct Banner {
    /// `https://…/ms365/?domain=contoso.demo` on the PBX listener.
    pub portal_login: String,
    /// The same on the SBC listener, with `client=webrtc`.
    pub webrtc_login: String,
    pub admin_page: String,
    pub admin_token: String,
    pub token_file: PathBuf,
    pub metrics: String,
    pub emulator: String,
    pub upstream: String,
    pub data_dir: PathBuf,
    pub sync: FirstSync,
}

impl Banner {
    pub(crate) fn new(
        config: &Config,
        admin_addr: SocketAddr,
        admin_token: String,
        sync: FirstSync,
        services: &Services,
    ) -> Banner {
        let url = |kind| {
            config
                .listener(kind)
                .map(|l| l.public_url.clone())
                .unwrap_or_default()
        };
        let (pbx, sbc) = (url(ListenerKind::Pbx), url(ListenerKind::Sbc));
        Banner {
            portal_login: format!("{pbx}/ms365/?domain={SIP_DOMAIN}"),
            webrtc_login: format!("{sbc}/ms365/?domain={SIP_DOMAIN}&client=webrtc"),
            admin_page: format!("{pbx}/ms365/admin"),
            admin_token,
            token_file: config.data_dir.join(files::TOKEN_FILE),
            metrics: format!("http://{admin_addr}/metrics"),
            emulator: services.emulator.base_url.clone(),
            upstream: services.upstream.url.clone(),
            data_dir: config.data_dir.clone(),
            sync,
        }
    }
}

impl fmt::Display for Banner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.sync;
        writeln!(f, "ms365-gateway demo is ready (tenant {SIP_DOMAIN}).")?;
        writeln!(f)?;
        writeln!(f, "  PBX portal sign-in:   {}", self.portal_login)?;
        writeln!(f, "  WebRTC sign-in:       {}", self.webrtc_login)?;
        writeln!(f, "  Admin page:           {}", self.admin_page)?;
        writeln!(f, "  Admin token:          {}", self.admin_token)?;
        writeln!(f, "  Entra ID + Graph:     {}", self.emulator)?;
        writeln!(f, "  Demo PBX (upstream):  {}", self.upstream)?;
        writeln!(f, "  Metrics:              {}", self.metrics)?;
        writeln!(f, "  Data folder:          {}", self.data_dir.display())?;
        if let Some(upn) = &s.example_upn {
            writeln!(f, "  Sign in as, e.g.:     {upn}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  First sync: {} extensions ({} created, {} updated, {} disabled), {} photos, \
             {} contacts from {} mailboxes.",
            s.extensions, s.created, s.updated, s.disabled, s.photos, s.contacts, s.mailboxes
        )?;
        writeln!(
            f,
            "  The token is also in {}. The certificates are self-signed: the browser asks \
             once per port.",
            self.token_file.display()
        )?;
        writeln!(
            f,
            "  The emulator signs in without a password: pick a user on its page."
        )?;
        writeln!(f)?;
        write!(f, "{READY_LINE}")
    }
}
