//! The Graph client against the emulator: paging, delta rounds with removals, `$batch` with
//! throttled items, retries under injected faults, and the per-mailbox limit as the
//! emulator measures it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ms365_gateway::entra::AssertionAlg;
use ms365_gateway::entra::microsoft_client;
use ms365_gateway::graph::{BatchRequest, GraphClient, GraphError, GraphOptions, User};
use ms365_stand_ins::emulator::{Faults, RouteClass};

use crate::entra::{DIRECTORY, Fixture};

const SELECT: &[&str] = &[
    "id",
    "userPrincipalName",
    "displayName",
    "givenName",
    "surname",
    "accountEnabled",
];

async fn graph(f: &Fixture) -> GraphClient {
    f.new_pair(true).await;
    let tokens = Arc::new(f.client(AssertionAlg::Ps256).await);
    let options = GraphOptions {
        base_backoff: Duration::from_millis(20),
        ..GraphOptions::default()
    };
    GraphClient::new(
        microsoft_client(Duration::from_secs(30)),
        &f.endpoints,
        tokens,
        options,
    )
}

async fn all_users(
    g: &GraphClient,
    first: String,
    kind: &'static str,
) -> (Vec<User>, Option<String>) {
    let mut pages = g.pages::<User>(first, kind);
    let mut users = Vec::new();
    while let Some(page) = pages.next().await {
        users.extend(page.expect("page").value);
    }
    let delta = pages.delta_link().map(str::to_string);
    (users, delta)
}

#[tokio::test]
async fn users_are_paged_with_next_links() {
    let f = Fixture::new(&[]).await;
    let g = graph(&f).await;
    let (users, _) = all_users(&g, g.users_first_url(SELECT, 7), "users").await;
    let expected = f.emulator.emulator.users(DIRECTORY).len();
    assert_eq!(users.len(), expected);
    let ids: BTreeSet<_> = users.iter().map(|u| u.id.clone()).collect();
    assert_eq!(ids.len(), expected, "no user twice across pages");
    assert_eq!(g.stats().by_kind["users"], expected.div_ceil(7) as u64);
}

#[tokio::test]
async fn delta_rounds_report_changes_and_removals_then_expire() {
    let f = Fixture::new(&[]).await;
    let g = graph(&f).await;
    let (first, delta) = all_users(&g, g.users_delta_url(SELECT), "delta").await;
    let delta = delta.expect("the last page carries a deltaLink");
    assert_eq!(first.len(), f.emulator.emulator.users(DIRECTORY).len());
    let em = &f.emulator.emulator;
    let (soft, hard) = (first[1].id.clone(), first[2].id.clone());
    em.delete_user(DIRECTORY, soft.as_str());
    em.hard_delete_user(DIRECTORY, hard.as_str());
    let (changes, next_delta) = all_users(&g, delta, "delta").await;
    let removed = |id: &str| {
        changes
            .iter()
            .find(|u| u.id == id)
            .and_then(|u| u.removed.clone())
            .map(|r| r.reason)
    };
    assert_eq!(removed(soft.as_str()).as_deref(), Some("changed"));
    assert_eq!(removed(hard.as_str()).as_deref(), Some("deleted"));
    assert_eq!(changes.len(), 2, "only what changed: {changes:?}");
    em.expire_delta_tokens(DIRECTORY);
    let mut pages = g.pages::<User>(next_delta.unwrap(), "delta");
    let err = pages.next().await.unwrap().unwrap_err();
    assert!(matches!(err, GraphError::SyncStateNotFound), "{err:?}");
}

#[tokio::test]
async fn delta_rounds_ask_for_the_largest_pages() {
    let spec = ms365_stand_ins::emulator::TenantSpec {
        users: 2_100,
        ..crate::entra::tenant_spec()
    };
    let f = Fixture::with_spec(&[], spec).await;
    let g = graph(&f).await;
    let (users, delta) = all_users(
        &g,
        g.users_delta_url(SELECT),
        ms365_gateway::graph::DELTA_KIND,
    )
    .await;
    assert!(delta.is_some());
    assert_eq!(users.len(), f.emulator.emulator.users(DIRECTORY).len());
    assert_eq!(
        g.stats().by_kind["delta"],
        users.len().div_ceil(999) as u64,
        "999 users a page, not Graph's default 100"
    );
}

#[tokio::test]
async fn batch_retries_only_the_throttled_items() {
    let f = Fixture::new(&[]).await;
    let g = graph(&f).await;
    let users = f.emulator.emulator.users(DIRECTORY);
    let faults = Faults {
        rate_429: 0.4,
        retry_after: Some(0.05),
        ..Faults::default()
    };
    f.emulator.emulator.set_faults(RouteClass::Photos, faults);
    let requests: Vec<BatchRequest> = users
        .iter()
        .take(20)
        .enumerate()
        .map(|(i, u)| {
            BatchRequest::get(i.to_string(), format!("/users/{}/photo", u.id))
                .in_mailbox(u.id.clone())
        })
        .collect();
    let responses = g.batch(requests).await.unwrap();
    assert_eq!(responses.len(), 20);
    for (i, r) in responses.iter().enumerate() {
        assert_eq!(r.id, i.to_string(), "answers in input order");
        assert!(
            r.status == 200 || r.status == 404,
            "item {i} ended with {}",
            r.status
        );
    }
    assert!(
        g.stats().throttled > 0,
        "the fault injection throttled something"
    );
}

#[tokio::test]
async fn faults_are_retried_until_the_listing_matches_a_clean_one() {
    let f = Fixture::new(&[]).await;
    let g = graph(&f).await;
    let (clean, _) = all_users(&g, g.users_first_url(SELECT, 5), "users").await;
    let faults = Faults {
        rate_429: 0.2,
        retry_after: Some(0.05),
        rate_503: 0.05,
        rate_reset: 0.02,
        ..Faults::default()
    };
    f.emulator.emulator.set_faults(RouteClass::Users, faults);
    let (faulty, _) = all_users(&g, g.users_first_url(SELECT, 5), "users").await;
    let ids = |v: &[User]| v.iter().map(|u| u.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&faulty), ids(&clean));
    let stats = g.stats();
    assert!(stats.retries > 0 && stats.throttled > 0, "{stats:?}");
}

#[tokio::test]
async fn never_more_than_four_requests_per_mailbox() {
    let f = Fixture::new(&[]).await;
    let g = graph(&f).await;
    let mailbox = f.emulator.emulator.users(DIRECTORY)[0].id.clone();
    let faults = Faults {
        latency: Duration::from_millis(20),
        ..Faults::default()
    };
    f.emulator.emulator.set_faults(RouteClass::Photos, faults);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let (g, m) = (g.clone(), mailbox.clone());
        tasks.spawn(async move { g.photo_meta(&m).await.map(|_| ()) });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let stats = f.emulator.emulator.stats();
    assert!(stats.max_mailbox_concurrency <= 4, "{stats:?}");
    assert!(
        stats.max_mailbox_concurrency >= 2,
        "the requests did overlap: {stats:?}"
    );
    assert_eq!(stats.mailbox_violations, 0);
}
