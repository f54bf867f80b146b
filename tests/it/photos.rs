//! Profile photos against the emulator: download only on a changed `mediaEtag`, removal
//! when the photo goes, the mailbox limit kept, and `/ms365/photos/{user}` serving the
//! stored photo to signed-in users with ETag revalidation.

use http::StatusCode;
use ms365_gateway::config::Config;
use ms365_gateway::store::{DirectoryUser, DirectoryWrite, PbxUser, PbxUserSource};
use ms365_gateway::sync::context_for_tenant;
use ms365_gateway::sync::{
    PHOTO_SLICES, PhotoOptions, PhotoReport, run_phases, slice_of, sync_photos,
};
use ms365_gateway::sync::{SyncContext, SyncOptions, sync_users};
use ms365_gateway::{ObjectId, TenantId};

use crate::common::acme;
use crate::entra::DIRECTORY;
use crate::sso::{SsoWorld, WorldOptions};

const PHOTO_URL: &str = "https://pbx.test/ms365/photos/";

/// Photo bytes unique per user and version (ASCII, so the test browser reads them back
/// exactly; the emulator serves any bytes as `image/jpeg`).
fn photo_bytes(oid: &str, version: u32) -> Vec<u8> {
    format!("photo of {oid}, version {version}").into_bytes()
}

async fn run(ctx: &SyncContext) -> PhotoReport {
    sync_photos(ctx, &PhotoOptions::default())
        .await
        .unwrap_or_else(|e| panic!("photo sync failed: {e}"))
}

fn photo_requests(ctx: &SyncContext) -> u64 {
    ctx.graph.stats().by_kind.get("photo").copied().unwrap_or(0)
}

#[tokio::test]
async fn photos_download_on_etag_change_and_are_served_to_signed_in_users() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.browser();
    let done = b
        .login(
            "https://pbx.test/ms365/login?domain=acme.test&client=portal",
            &w.user.1,
        )
        .await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);

    // Photos off: nothing is asked.
    let config = Config::load(&w.setup.path("gateway.toml"), Vec::new()).unwrap();
    let ctx = context_for_tenant(&config, &w.store, &w.keyring, &acme())
        .await
        .unwrap();
    assert!(run(&ctx).await.disabled);
    assert_eq!(ctx.graph.stats().requests, 0);

    w.settings(|s| {
        s.users.enabled = true;
        s.users.sync_photo = true;
    })
    .await;
    sync_users(&ctx, &SyncOptions::default()).await.unwrap();
    let synced: Vec<PbxUser> = w
        .store
        .pbx_users(&acme())
        .await
        .unwrap()
        .into_iter()
        .filter(|u| u.enabled && u.source == PbxUserSource::Ms365 && u.ms365_oid.is_some())
        .collect();
    assert!(synced.len() >= 6, "{} users synced", synced.len());
    // Every other synced user has a photo: a known set, whatever the seed generated.
    let emu = &w.emulator.emulator;
    let oid = |u: &PbxUser| u.ms365_oid.clone().unwrap();
    let with: Vec<&PbxUser> = synced.iter().step_by(2).collect();
    let without: Vec<&PbxUser> = synced.iter().skip(1).step_by(2).collect();
    for u in &with {
        emu.set_photo(
            DIRECTORY,
            oid(u).as_str(),
            Some(photo_bytes(oid(u).as_str(), 1)),
        );
    }
    for u in &without {
        emu.set_photo(DIRECTORY, oid(u).as_str(), None);
    }

    let first = run(&ctx).await;
    assert_eq!(first.checked, synced.len());
    assert_eq!(first.downloaded, with.len(), "{first:?}");
    assert_eq!(first.without_photo, without.len(), "{first:?}");
    assert_eq!((first.unchanged, first.removed), (0, 0));
    assert!(first.skipped.is_empty(), "{:?}", first.skipped);
    assert!(first.graph_requests > 0);
    // The downloads came twenty to a `$batch`, none on its own.
    assert_eq!(photo_requests(&ctx), 0, "{:?}", ctx.graph.stats().by_kind);
    for u in &with {
        let stored = w.store.photo(&acme(), &oid(u)).await.unwrap().unwrap();
        assert_eq!(stored.bytes, photo_bytes(oid(u).as_str(), 1));
        assert_eq!(stored.content_type, "image/jpeg");
    }
    for u in &without {
        assert!(w.store.photo(&acme(), &oid(u)).await.unwrap().is_none());
    }

    // Nothing changed: metadata only, no download.
    let downloads_before = photo_requests(&ctx);
    let second = run(&ctx).await;
    assert_eq!(second.downloaded, 0, "{second:?}");
    assert_eq!(second.unchanged, with.len());
    assert_eq!(
        photo_requests(&ctx),
        downloads_before,
        "no download requests"
    );
    let batches = synced.len().div_ceil(20) as u64;
    assert!(second.graph_requests <= batches + 2, "{second:?}");

    // One photo changes: exactly one download.
    let changed = with[0];
    emu.set_photo(
        DIRECTORY,
        oid(changed).as_str(),
        Some(photo_bytes(oid(changed).as_str(), 2)),
    );
    let third = run(&ctx).await;
    assert_eq!(third.downloaded, 1, "{third:?}");
    assert_eq!(third.unchanged, with.len() - 1);
    let stored = w
        .store
        .photo(&acme(), &oid(changed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.bytes, photo_bytes(oid(changed).as_str(), 2));

    // A photo over the size cap is skipped and the stored one stays.
    let big = with[2];
    emu.set_photo(DIRECTORY, oid(big).as_str(), Some(vec![0xff; 4096]));
    let capped = PhotoOptions {
        max_bytes: 1024,
        ..PhotoOptions::default()
    };
    let report = sync_photos(&ctx, &capped).await.unwrap();
    assert_eq!(report.downloaded, 0, "{report:?}");
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert!(
        report.skipped[0].reason.contains("larger than 1024 bytes"),
        "{report:?}"
    );
    let kept = w.store.photo(&acme(), &oid(big)).await.unwrap().unwrap();
    assert_eq!(kept.bytes, photo_bytes(oid(big).as_str(), 1));
    emu.set_photo(
        DIRECTORY,
        oid(big).as_str(),
        Some(photo_bytes(oid(big).as_str(), 1)),
    );

    // One photo goes: removed from the store.
    let gone = with[1];
    emu.set_photo(DIRECTORY, oid(gone).as_str(), None);
    let fourth = run(&ctx).await;
    assert_eq!((fourth.removed, fourth.downloaded), (1, 0), "{fourth:?}");
    assert!(w.store.photo(&acme(), &oid(gone)).await.unwrap().is_none());

    let stats = emu.stats();
    assert_eq!(stats.mailbox_violations, 0, "{stats:?}");
    assert!(stats.max_mailbox_concurrency <= 4, "{stats:?}");

    // Served to the signed-in user, with an ETag and revalidation.
    let url = format!("{PHOTO_URL}{}", changed.id);
    let page = b.get(&url).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.headers["content-type"], "image/jpeg");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    assert_eq!(page.headers["cache-control"], "private, max-age=3600");
    assert_eq!(page.body.as_bytes(), photo_bytes(oid(changed).as_str(), 2));
    let etag = page.headers["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let again = b
        .request("GET", &url, &[("if-none-match", &etag)], None)
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    let stale = b
        .request("GET", &url, &[("if-none-match", "\"stale\"")], None)
        .await;
    assert_eq!(stale.status, StatusCode::OK);

    // No photo, unknown user: 404.
    let none = b.get(&format!("{PHOTO_URL}{}", gone.id)).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    let unknown = b.get(&format!("{PHOTO_URL}no-such-user")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // Another tenant's user (same oid, stored photo) is not this session's to see.
    let mut foreign = changed.clone();
    foreign.id = "beta-user".into();
    foreign.tenant_id = TenantId::from_static("beta");
    let entry = DirectoryUser {
        tenant_id: TenantId::from_static("beta"),
        oid: oid(changed),
        upn: format!("x@{}", "beta.test"),
        pbx_user_id: foreign.id.clone(),
        extension: Some(foreign.extension_number.clone()),
        display_name: "Beta".into(),
        email: None,
        role: ms365_gateway::store::Role::User,
        enabled: true,
        source: "sync".into(),
    };
    w.store
        .apply_directory_writes(
            &TenantId::from_static("beta"),
            &[DirectoryWrite::Create {
                user: Box::new(foreign),
                directory: Box::new(entry),
            }],
        )
        .await
        .unwrap();
    w.store
        .save_photo(
            &TenantId::from_static("beta"),
            &oid(changed),
            "\"B\"",
            "image/png",
            b"beta",
        )
        .await
        .unwrap();
    assert!(
        w.store
            .pbx_user(&TenantId::from_static("beta"), "beta-user")
            .await
            .unwrap()
            .is_some()
    );
    let cross = b.get(&format!("{PHOTO_URL}beta-user")).await;
    assert_eq!(cross.status, StatusCode::NOT_FOUND);

    // Without a session: 401 JSON.
    let anonymous = w.browser().get(&url).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(
        anonymous.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(anonymous.json()["errors"].is_array());
}

/// Graph's users delta does not report photo changes: once every photo was looked at, a
/// delta run re-checks the photos of one slice of the users in turn (a seventh), so a photo
/// that changed while its user's record did not arrives within seven runs, and every user is
/// looked at once in seven runs. Turning photos off and on starts over with everyone.
#[tokio::test]
async fn delta_runs_recheck_photos_one_slice_at_a_time() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    w.settings(|s| {
        s.users.enabled = true;
        s.users.sync_photo = true;
    })
    .await;
    let config = Config::load(&w.setup.path("gateway.toml"), Vec::new()).unwrap();
    let ctx = context_for_tenant(&config, &w.store, &w.keyring, &acme())
        .await
        .unwrap();
    sync_users(&ctx, &SyncOptions::default()).await.unwrap();
    let synced: Vec<ObjectId> = (w.store.pbx_users(&acme()).await.unwrap().into_iter())
        .filter(|u| u.enabled && u.source == PbxUserSource::Ms365)
        .filter_map(|u| u.ms365_oid)
        .collect();
    assert!(synced.len() >= 6, "{} users synced", synced.len());
    let emu = &w.emulator.emulator;
    for oid in &synced {
        emu.set_photo(DIRECTORY, oid.as_str(), Some(photo_bytes(oid.as_str(), 1)));
    }
    // The first run with photos on looks at everyone, even after a delta users round.
    let first = run_phases(&ctx, SyncOptions::default()).await.unwrap();
    assert_eq!(
        first.users.mode.as_deref(),
        Some("delta"),
        "{:?}",
        first.users
    );
    let photos = first.photos.expect("photos on");
    assert_eq!(
        (photos.checked, photos.downloaded),
        (synced.len(), synced.len())
    );

    // A photo changes, its user's record does not.
    let changed = synced.iter().find(|o| slice_of(o) != 0).unwrap().clone();
    emu.set_photo(
        DIRECTORY,
        changed.as_str(),
        Some(photo_bytes(changed.as_str(), 2)),
    );
    let (mut seen, mut checked) = (Vec::new(), Vec::new());
    for index in 0..PHOTO_SLICES {
        let run = run_phases(&ctx, SyncOptions::default()).await.unwrap();
        assert_eq!(run.users.mode.as_deref(), Some("delta"), "{:?}", run.users);
        let photos = run.photos.expect("photos on");
        let slice: Vec<&ObjectId> = synced.iter().filter(|o| slice_of(o) == index).collect();
        assert_eq!(photos.checked, slice.len(), "slice {index}: {photos:?}");
        checked.push(photos.checked);
        let stored = w.store.photo(&acme(), &changed).await.unwrap().unwrap();
        let version = if slice_of(&changed) <= index { 2 } else { 1 };
        assert_eq!(
            stored.bytes,
            photo_bytes(changed.as_str(), version),
            "after slice {index}"
        );
        seen.extend(slice.into_iter().cloned());
    }
    // Seven runs looked at every user once, and no more.
    assert_eq!(checked.iter().sum::<usize>(), synced.len(), "{checked:?}");
    seen.sort();
    let mut everyone = synced.clone();
    everyone.sort();
    assert_eq!(seen, everyone);
    // The rotation starts over.
    let again = run_phases(&ctx, SyncOptions::default()).await.unwrap();
    assert_eq!(again.photos.unwrap().checked, checked[0]);
    // Photos off, then on: everyone again.
    w.settings(|s| s.users.sync_photo = false).await;
    let off = run_phases(&ctx, SyncOptions::default()).await.unwrap();
    assert!(off.photos.is_none());
    w.settings(|s| s.users.sync_photo = true).await;
    let on = run_phases(&ctx, SyncOptions::default()).await.unwrap();
    assert_eq!(on.photos.unwrap().checked, synced.len());
}
