//! Deterministic directory data: users, shared mailboxes, guests, groups, contacts and profile
//! photos, all drawn from the lists in `names` with a [`Dice`] keyed on (seed, tenant,
//! kind, index). Contacts are never stored: any contact can be regenerated from its indices,
//! which is what lets a tenant hold a million of them in a few megabytes of overlay.

use std::collections::HashMap;

use super::TenantSpec;
use super::model::{Contact, EmailAddress, PhysicalAddress, User};
use super::names::{
    COMPANIES, CONTACT_TITLES, DEPARTMENTS, EXTERNAL, FIRST, LAST, OFFICES, ROOMS, SHARED, address,
    maybe_one, phone, slug,
};
use super::state::{GroupRecord, Life, Member, Photo, UserRecord};
use super::util::{Dice, b64url, b64url_decode, iso, sha256};

/// 2024-01-15T08:00:00Z: seeded objects are created after this instant.
const EPOCH: i64 = 1_705_305_600;
const KIND_MEMBER: u64 = 1;
const KIND_SHARED: u64 = 2;
const KIND_GUEST: u64 = 3;
const KIND_GROUP: u64 = 4;
const KIND_CONTACT: u64 = 5;

/// Every user of a tenant: members first, then shared mailboxes, then guests.
pub(crate) fn users(seed: u64, tenant: u64, spec: &TenantSpec) -> Vec<UserRecord> {
    let mut taken = HashMap::new();
    let total = spec.users + spec.shared_mailboxes + spec.guests;
    let mut out = Vec::with_capacity(total);
    for i in 0..spec.users {
        out.push(member(seed, tenant, spec, i, &mut taken));
    }
    for j in 0..spec.shared_mailboxes {
        out.push(shared_mailbox(seed, tenant, spec, j));
    }
    for k in 0..spec.guests {
        out.push(guest(seed, tenant, spec, k));
    }
    out
}

/// A unique local part: the first "adele.vance", then "adele.vance2", …
fn unique(local: String, taken: &mut HashMap<String, u32>) -> String {
    let n = taken.entry(local.clone()).or_insert(0);
    *n += 1;
    if *n == 1 {
        local
    } else {
        format!("{local}{n}")
    }
}

/// Display name, given name, surname and mail local part of member `i`: a person, or for
/// the last `users_without_names` members a room-like account with neither name.
fn naming(
    d: &mut Dice,
    i: usize,
    nameless: bool,
    taken: &mut HashMap<String, u32>,
) -> (String, Option<String>, Option<String>, String) {
    let (first, last) = (d.pick(FIRST), d.pick(LAST));
    if nameless {
        let room = d.pick(ROOMS);
        return (
            format!("{room} {}", i + 1),
            None,
            None,
            format!("{}{}", slug(room), i + 1),
        );
    }
    let local = unique(format!("{}.{}", slug(first), slug(last)), taken);
    (
        format!("{first} {last}"),
        Some(first.into()),
        Some(last.into()),
        local,
    )
}

fn member(
    seed: u64,
    tenant: u64,
    spec: &TenantSpec,
    i: usize,
    taken: &mut HashMap<String, u32>,
) -> UserRecord {
    let mut d = Dice::new(&[seed, tenant, KIND_MEMBER, i as u64]);
    let id = d.guid();
    let nameless = i >= spec.users - spec.users_without_names.min(spec.users);
    let disabled_from = spec
        .users
        .saturating_sub(spec.users_without_names + spec.disabled);
    let unlicensed =
        i < disabled_from && i >= disabled_from.saturating_sub(spec.users_without_mailbox);
    let (display, given, surname, local) = naming(&mut d, i, nameless, taken);
    let upn = format!("{local}@{}", spec.domain);
    let (department, titles) = DEPARTMENTS[d.below(DEPARTMENTS.len())];
    // Room-like accounts (no names) have no job title or department either.
    let has_dept = d.unit() < 0.9 && !nameless;
    let user = User {
        id,
        // Every fifth user has no mailbox address, as unlicensed accounts do.
        mail: (i % 5 != 4 && !unlicensed).then(|| upn.clone()),
        user_principal_name: upn,
        display_name: display,
        given_name: given,
        surname,
        business_phones: maybe_one(&mut d, 0.8, phone),
        mobile_phone: (d.unit() < 0.6).then(|| phone(&mut d)),
        job_title: has_dept.then(|| d.pick(titles).to_string()),
        department: has_dept.then(|| department.to_string()),
        office_location: (d.unit() < 0.85).then(|| d.pick(OFFICES).to_string()),
        preferred_language: (d.unit() < 0.7).then(|| "en-US".to_string()),
        account_enabled: nameless || i < disabled_from,
        user_type: "Member".into(),
    };
    let photo = if d.unit() < spec.photo_share {
        Photo::Generated(0)
    } else {
        Photo::None
    };
    record(user, photo, !unlicensed, spec.contacts_per_user)
}

fn shared_mailbox(seed: u64, tenant: u64, spec: &TenantSpec, j: usize) -> UserRecord {
    let mut d = Dice::new(&[seed, tenant, KIND_SHARED, j as u64]);
    let base = SHARED[j % SHARED.len()];
    let display = match j / SHARED.len() {
        0 => base.to_string(),
        n => format!("{base} {}", n + 1),
    };
    let upn = format!("{}@{}", slug(&display), spec.domain);
    let user = User {
        id: d.guid(),
        user_principal_name: upn.clone(),
        display_name: display,
        given_name: None,
        surname: None,
        mail: Some(upn),
        mobile_phone: None,
        business_phones: Vec::new(),
        job_title: None,
        department: None,
        office_location: None,
        preferred_language: None,
        // Exchange creates shared mailboxes with their sign-in blocked.
        account_enabled: false,
        user_type: "Member".into(),
    };
    record(user, Photo::None, true, spec.contacts_per_user)
}

fn guest(seed: u64, tenant: u64, spec: &TenantSpec, k: usize) -> UserRecord {
    let mut d = Dice::new(&[seed, tenant, KIND_GUEST, k as u64]);
    let id = d.guid();
    let (first, last, home) = (d.pick(FIRST), d.pick(LAST), d.pick(EXTERNAL));
    let local = format!(
        "{}.{}{}",
        slug(first),
        slug(last),
        if k == 0 { String::new() } else { k.to_string() }
    );
    let user = User {
        id,
        user_principal_name: format!("{local}_{home}#EXT#@{}", spec.domain),
        display_name: format!("{first} {last}"),
        given_name: Some(first.into()),
        surname: Some(last.into()),
        mail: Some(format!("{local}@{home}")),
        mobile_phone: None,
        business_phones: Vec::new(),
        job_title: None,
        department: None,
        office_location: None,
        preferred_language: None,
        account_enabled: true,
        user_type: "Guest".into(),
    };
    // A B2B guest has no mailbox in the inviting tenant.
    record(user, Photo::None, false, 0)
}

pub(crate) fn record(user: User, photo: Photo, mailbox: bool, contacts: usize) -> UserRecord {
    UserRecord {
        user,
        life: Life::Active,
        photo,
        mailbox,
        base_contacts: if mailbox { contacts as u32 } else { 0 },
    }
}

/// Two groups: "Engineering" (the Engineering members) nested inside "All Staff" (every
/// other member user), so `transitiveMembers` has a nested group to flatten.
pub(crate) fn groups(seed: u64, tenant: u64, users: &[UserRecord]) -> Vec<GroupRecord> {
    let regular = |u: &UserRecord| u.user.user_type == "Member" && u.user.given_name.is_some();
    let engineering = |u: &UserRecord| u.user.department.as_deref() == Some("Engineering");
    let (mut eng, mut all) = (Vec::new(), vec![Member::Group(0)]);
    for (idx, u) in users.iter().enumerate() {
        match (regular(u), engineering(u)) {
            (true, true) => eng.push(Member::User(idx as u32)),
            (true, false) => all.push(Member::User(idx as u32)),
            _ => {}
        }
    }
    let group = |n: u64, name: &str, members: Vec<Member>| GroupRecord {
        id: Dice::new(&[seed, tenant, KIND_GROUP, n]).guid(),
        display_name: name.to_string(),
        mail_nickname: slug(name),
        members,
    };
    vec![group(0, "Engineering", eng), group(1, "All Staff", all)]
}

/// Contact ids encode (tenant, user, contact) so a lookup needs no index; the check word
/// keeps ids of one seed from resolving in another.
pub(crate) fn contact_id(seed: u64, tenant: u32, user: u32, contact: u32) -> String {
    let check = Dice::new(&[seed, tenant as u64, user as u64, contact as u64]).next() as u32;
    let mut bytes = vec![0x43, 0x54];
    bytes.extend_from_slice(&(tenant as u16).to_be_bytes());
    bytes.extend_from_slice(&user.to_be_bytes());
    bytes.extend_from_slice(&contact.to_be_bytes());
    bytes.extend_from_slice(&check.to_be_bytes());
    format!("AAMkA{}", b64url(&bytes))
}

/// The inverse of [`contact_id`]: `(tenant, user, contact)`.
pub(crate) fn parse_contact_id(seed: u64, id: &str) -> Option<(u32, u32, u32)> {
    let bytes = b64url_decode(id.strip_prefix("AAMkA")?)?;
    if bytes.len() != 16 || bytes[..2] != [0x43, 0x54] {
        return None;
    }
    let word =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let tenant = u16::from_be_bytes([bytes[2], bytes[3]]) as u32;
    let (user, contact) = (word(4), word(8));
    (contact_id(seed, tenant, user, contact) == id).then_some((tenant, user, contact))
}

/// The id of a mailbox's default Contacts folder.
pub(crate) fn folder_id(seed: u64, tenant: u32, user: u32) -> String {
    let check = Dice::new(&[seed, tenant as u64, user as u64, 0xF0]).next() as u32;
    let mut bytes = vec![0x46, 0x44];
    bytes.extend_from_slice(&(tenant as u16).to_be_bytes());
    bytes.extend_from_slice(&user.to_be_bytes());
    bytes.extend_from_slice(&check.to_be_bytes());
    format!("AQMkA{}", b64url(&bytes))
}

/// Contact `c` of mailbox `u`, regenerated from its indices.
pub(crate) fn contact(seed: u64, tenant: u32, user: u32, c: u32) -> Contact {
    let mut d = Dice::new(&[seed, tenant as u64, KIND_CONTACT, user as u64, c as u64]);
    let (first, last, company) = (d.pick(FIRST), d.pick(LAST), d.pick(COMPANIES));
    let display = format!("{first} {last}");
    let email_addresses = if d.unit() < 0.85 {
        let address = format!("{}.{}@{}.com", slug(first), slug(last), slug(company));
        vec![EmailAddress {
            name: display.clone(),
            address,
        }]
    } else {
        Vec::new()
    };
    let created = EPOCH + d.below(300 * 86_400) as i64;
    let initial = |s: &str| s.chars().next().unwrap_or('X');
    Contact {
        id: contact_id(seed, tenant, user, c),
        created_date_time: iso(created),
        last_modified_date_time: iso(created + d.below(30 * 86_400) as i64),
        change_key: format!("EQAAABYAAAA{}", b64url(&d.next().to_be_bytes())),
        categories: maybe_one(&mut d, 0.1, |_| "Customers".into()),
        parent_folder_id: folder_id(seed, tenant, user),
        file_as: format!("{last}, {first}"),
        initials: Some(format!("{}.{}.", initial(first), initial(last))),
        given_name: Some(first.into()),
        surname: Some(last.into()),
        job_title: Some(d.pick(CONTACT_TITLES).into()),
        company_name: Some(company.into()),
        business_phones: maybe_one(&mut d, 0.7, phone),
        mobile_phone: (d.unit() < 0.6).then(|| phone(&mut d)),
        home_phones: maybe_one(&mut d, 0.15, phone),
        business_address: if d.unit() < 0.5 {
            address(&mut d)
        } else {
            PhysicalAddress::default()
        },
        personal_notes: maybe_one(&mut d, 0.1, |_| {
            format!("Met at the {company} partner day.")
        })
        .concat(),
        email_addresses,
        display_name: display,
        ..Contact::default()
    }
}

/// A real baseline JPEG, 240×240 flat grey, with `tag` in a comment segment so every user's
/// photo (and so its ETag) differs. Huffman tables hold one code each: DC "difference 0"
/// and AC "end of block", so each of the 900 blocks is two zero bits.
pub(crate) fn jpeg(tag: &str) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    out.extend_from_slice(&[
        0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0,
    ]);
    let comment = format!("ms365-gateway emulator photo {tag}");
    let comment = &comment.as_bytes()[..comment.len().min(200)];
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&((comment.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(comment);
    out.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]);
    out.extend_from_slice(&[1u8; 64]);
    out.extend_from_slice(&[
        0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0xF0, 0x00, 0xF0, 0x01, 0x01, 0x11, 0x00,
    ]);
    for class in [0x00u8, 0x10] {
        out.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x14, class, 0x01]);
        out.extend_from_slice(&[0u8; 15]);
        out.push(0x00);
    }
    out.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00]);
    out.extend_from_slice(&[0u8; 225]);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// The `@odata.mediaEtag` / `ETag` of photo bytes (Graph shows eight hex digits).
pub(crate) fn photo_etag(bytes: &[u8]) -> String {
    super::util::hex_upper(&sha256(bytes)[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(users: usize) -> TenantSpec {
        TenantSpec {
            users,
            contacts_per_user: 3,
            photo_share: 0.5,
            shared_mailboxes: 1,
            guests: 1,
            disabled: 1,
            users_without_names: 1,
            ..TenantSpec::new(
                "11111111-1111-4111-8111-111111111111",
                "contoso.onmicrosoft.com",
            )
        }
    }

    #[test]
    fn seeding_is_deterministic_and_upns_unique() {
        let a = users(7, 0, &spec(2000));
        let b = users(7, 0, &spec(2000));
        assert_eq!(a.len(), 2002);
        assert!(a.iter().zip(&b).all(|(x, y)| x.user == y.user));
        let upns: std::collections::HashSet<_> = a
            .iter()
            .map(|u| u.user.user_principal_name.to_lowercase())
            .collect();
        assert_eq!(upns.len(), a.len());
        assert!(a.iter().all(|u| u.user.user_principal_name.is_ascii()));
        assert!(a.iter().any(|u| u.user.mail.is_none()));
        assert_eq!(
            a.iter()
                .filter(|u| u.user.given_name.is_none()
                    && u.user.user_type == "Member"
                    && u.mailbox
                    && u.user.account_enabled)
                .count(),
            1
        );
        let guest = a.last().unwrap();
        assert!(
            guest
                .user
                .user_principal_name
                .contains("#EXT#@contoso.onmicrosoft.com")
        );
    }

    #[test]
    fn contact_ids_round_trip() {
        let c = contact(9, 1, 42, 7);
        assert_eq!(parse_contact_id(9, &c.id), Some((1, 42, 7)));
        assert_eq!(parse_contact_id(10, &c.id), None);
        assert_eq!(contact(9, 1, 42, 7), c);
    }

    #[test]
    fn photo_is_a_jpeg() {
        let bytes = jpeg("x");
        assert_eq!(&bytes[..3], &[0xFF, 0xD8, 0xFF]);
        assert_eq!(&bytes[bytes.len() - 2..], &[0xFF, 0xD9]);
        assert!(bytes.len() > 300);
        assert_ne!(photo_etag(&bytes), photo_etag(&jpeg("y")));
    }
}
