//! National clouds: which login and Graph hosts a tenant talks to, and every endpoint URL
//! built from them. The config's `[clouds.NAME]` overrides point a cloud at other hosts
//! (the emulator in tests and the demo); nothing else in the code knows a host name.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::config::CloudOverride;

/// The Microsoft clouds a tenant can live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NationalCloud {
    /// login.microsoftonline.com / graph.microsoft.com
    #[default]
    Global,
    /// Microsoft Azure operated by 21Vianet.
    China,
    /// Azure Government (L4).
    UsGov,
    /// Azure Government DoD (L5).
    UsGovDod,
}

impl NationalCloud {
    pub const ALL: [NationalCloud; 4] = [
        NationalCloud::Global,
        NationalCloud::China,
        NationalCloud::UsGov,
        NationalCloud::UsGovDod,
    ];

    /// The name used in the API and the config (`GLOBAL`, `CHINA`, `USGOV`, `USGOV_DOD`).
    pub fn name(self) -> &'static str {
        match self {
            NationalCloud::Global => "GLOBAL",
            NationalCloud::China => "CHINA",
            NationalCloud::UsGov => "USGOV",
            NationalCloud::UsGovDod => "USGOV_DOD",
        }
    }

    fn default_hosts(self) -> (&'static str, &'static str) {
        match self {
            NationalCloud::Global => (
                "https://login.microsoftonline.com",
                "https://graph.microsoft.com",
            ),
            NationalCloud::China => (
                "https://login.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn",
            ),
            NationalCloud::UsGov => (
                "https://login.microsoftonline.us",
                "https://graph.microsoft.us",
            ),
            NationalCloud::UsGovDod => (
                "https://login.microsoftonline.us",
                "https://dod-graph.microsoft.us",
            ),
        }
    }

    /// Whether Graph offers contacts delta queries in this cloud (not in 21Vianet's).
    pub fn has_contacts_delta(self) -> bool {
        self != NationalCloud::China
    }
}

impl fmt::Display for NationalCloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NationalCloud {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        NationalCloud::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown national cloud `{s}`; use GLOBAL, CHINA, USGOV or USGOV_DOD")
            })
    }
}

/// The endpoints of one cloud, with overrides applied. URLs carry no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEndpoints {
    pub cloud: NationalCloud,
    /// e.g. `https://login.microsoftonline.com`
    pub login: String,
    /// e.g. `https://graph.microsoft.com`
    pub graph: String,
}

impl CloudEndpoints {
    /// Microsoft's endpoints for `cloud`, or the configured overrides.
    pub fn resolve(
        cloud: NationalCloud,
        overrides: &BTreeMap<String, CloudOverride>,
    ) -> CloudEndpoints {
        let (login, graph) = cloud.default_hosts();
        let o = overrides.get(cloud.name());
        let pick = |over: Option<&http::Uri>, default: &str| {
            over.map(|u| u.to_string().trim_end_matches('/').to_string())
                .unwrap_or_else(|| default.to_string())
        };
        CloudEndpoints {
            cloud,
            login: pick(o.and_then(|o| o.login.as_ref()), login),
            graph: pick(o.and_then(|o| o.graph.as_ref()), graph),
        }
    }

    /// `{login}/{tenant}/oauth2/v2.0/authorize`
    pub fn authorize_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/authorize", self.login)
    }

    /// `{login}/{tenant}/oauth2/v2.0/token`: also the `aud` of client assertions.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.login)
    }

    /// `{login}/{tenant}/v2.0/.well-known/openid-configuration`
    pub fn discovery_url(&self, tenant: &str) -> String {
        format!(
            "{}/{tenant}/v2.0/.well-known/openid-configuration",
            self.login
        )
    }

    /// `{login}/{tenant}/discovery/v2.0/keys`
    pub fn jwks_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/discovery/v2.0/keys", self.login)
    }

    /// `{login}/{tenant}/oauth2/v2.0/logout`
    pub fn end_session_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/logout", self.login)
    }

    /// The v2.0 ID token issuer for a directory: `{login}/{tid}/v2.0`.
    pub fn issuer(&self, tid: &str) -> String {
        format!("{}/{tid}/v2.0", self.login)
    }

    /// The app-only scope for Graph: `{graph}/.default`.
    pub fn graph_scope(&self) -> String {
        format!("{}/.default", self.graph)
    }

    /// Base of Graph v1.0 requests: `{graph}/v1.0`.
    pub fn graph_base(&self) -> String {
        format!("{}/v1.0", self.graph)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_per_cloud() {
        let none = BTreeMap::new();
        let china = CloudEndpoints::resolve(NationalCloud::China, &none);
        assert_eq!(
            china.token_url("t"),
            "https://login.chinacloudapi.cn/t/oauth2/v2.0/token"
        );
        assert_eq!(
            china.graph_scope(),
            "https://microsoftgraph.chinacloudapi.cn/.default"
        );
        let dod = CloudEndpoints::resolve(NationalCloud::UsGovDod, &none);
        assert_eq!(dod.graph_base(), "https://dod-graph.microsoft.us/v1.0");
        assert_eq!(dod.login, "https://login.microsoftonline.us");
        let global = CloudEndpoints::resolve(NationalCloud::Global, &none);
        assert_eq!(
            global.issuer("tid"),
            "https://login.microsoftonline.com/tid/v2.0"
        );
        assert_eq!(
            global.jwks_url("tid"),
            "https://login.microsoftonline.com/tid/discovery/v2.0/keys"
        );
        assert!(!NationalCloud::China.has_contacts_delta());
        assert_eq!(
            "usgov_dod".parse::<NationalCloud>().unwrap(),
            NationalCloud::UsGovDod
        );
    }

    #[test]
    fn overrides_replace_hosts() {
        let mut o = BTreeMap::new();
        o.insert(
            "GLOBAL".to_string(),
            CloudOverride {
                login: Some("http://127.0.0.1:9000/".parse().unwrap()),
                graph: None,
            },
        );
        let e = CloudEndpoints::resolve(NationalCloud::Global, &o);
        assert_eq!(
            e.authorize_url("x"),
            "http://127.0.0.1:9000/x/oauth2/v2.0/authorize"
        );
        assert_eq!(e.graph, "https://graph.microsoft.com");
    }
}
