//! Mutations of the directory through the control API: users (add, change, soft delete,
//! hard delete, restore), photos, and the contacts of a mailbox's default folder. Each one
//! appends to the tenant's change log under the tenant's write lock, so a delta query sees
//! every change exactly once, in order.

use std::sync::Arc;

use super::Emulator;
use super::model::{Contact, ContactPatch, EmulatorError, NewContact, NewUser, User, UserPatch};
use super::seed;
use super::state::{Life, Photo, Tenant, TenantData, UserRecord};
use super::util::{b64url, guid, iso};

impl Emulator {
    /// The tenant's users that are not deleted, in directory order.
    pub fn users(&self, directory_id: &str) -> Vec<User> {
        self.inner.tenant(directory_id).map_or_else(Vec::new, |t| {
            t.read()
                .users
                .iter()
                .filter(|u| u.life == Life::Active)
                .map(|u| u.user.clone())
                .collect()
        })
    }

    pub fn try_add_user(&self, directory_id: &str, new: NewUser) -> Result<User, EmulatorError> {
        let tenant = self.inner.require_tenant(directory_id)?;
        if new.user_principal_name.trim().is_empty() {
            return Err(EmulatorError::Invalid(
                "userPrincipalName is required".into(),
            ));
        }
        let (record, user) = new_user_record(new);
        tenant.write().insert_user(record)?;
        // Graph reports a created user as `updated`.
        self.notify_user(&tenant.id, &user.id, "updated");
        Ok(user)
    }

    pub fn try_update_user(
        &self,
        directory_id: &str,
        id: &str,
        patch: UserPatch,
    ) -> Result<User, EmulatorError> {
        let tenant = self.inner.require_tenant(directory_id)?;
        let mut data = tenant.write();
        let (idx, _) = data
            .active(id)
            .ok_or_else(|| EmulatorError::UnknownUser(id.into()))?;
        if let Some(upn) = &patch.user_principal_name {
            let old = data.users[idx as usize].user.user_principal_name.clone();
            if data.index(upn).is_some_and(|other| other != idx) {
                return Err(EmulatorError::DuplicateUser(upn.clone()));
            }
            data.rename_upn(idx, &old, upn);
        }
        apply_user_patch(&mut data.users[idx as usize].user, patch);
        data.touch_user(idx);
        let user = data.users[idx as usize].user.clone();
        drop(data);
        self.notify_user(&tenant.id, &user.id, "updated");
        Ok(user)
    }

    pub fn try_delete_user(&self, directory_id: &str, id: &str) -> Result<(), EmulatorError> {
        self.set_life(directory_id, id, &[Life::Active], Life::SoftDeleted)
            .map(|_| ())
    }

    pub fn try_hard_delete_user(&self, directory_id: &str, id: &str) -> Result<(), EmulatorError> {
        self.set_life(
            directory_id,
            id,
            &[Life::Active, Life::SoftDeleted],
            Life::HardDeleted,
        )
        .map(|_| ())
    }

    pub fn try_restore_user(&self, directory_id: &str, id: &str) -> Result<User, EmulatorError> {
        self.set_life(directory_id, id, &[Life::SoftDeleted], Life::Active)
    }

    /// Adds a user (a new object id, logged as a change).
    pub fn add_user(&self, directory_id: &str, new: NewUser) -> User {
        must("add_user", self.try_add_user(directory_id, new))
    }

    pub fn update_user(&self, directory_id: &str, id: &str, patch: UserPatch) -> User {
        must("update_user", self.try_update_user(directory_id, id, patch))
    }

    /// Moves the user to the recycle bin; delta reports `@removed` reason `changed`.
    pub fn delete_user(&self, directory_id: &str, id: &str) {
        must("delete_user", self.try_delete_user(directory_id, id))
    }

    /// Deletes the user for good; delta reports `@removed` reason `deleted`.
    pub fn hard_delete_user(&self, directory_id: &str, id: &str) {
        must(
            "hard_delete_user",
            self.try_hard_delete_user(directory_id, id),
        )
    }

    /// Brings a soft-deleted user back; delta reports it as a normal object again.
    pub fn restore_user(&self, directory_id: &str, id: &str) -> User {
        must("restore_user", self.try_restore_user(directory_id, id))
    }

    /// Replaces the user's photo (`None` removes it); the bytes decide the ETag.
    pub fn set_photo(&self, directory_id: &str, user_id: &str, photo: Option<Vec<u8>>) {
        must(
            "set_photo",
            self.try_set_photo(directory_id, user_id, photo),
        )
    }

    /// Every contact of the mailbox's default folder (generated plus changes).
    pub fn contacts(&self, directory_id: &str, user_id: &str) -> Vec<Contact> {
        must("contacts", self.try_contacts(directory_id, user_id))
    }

    pub fn add_contact(&self, directory_id: &str, user_id: &str, new: NewContact) -> Contact {
        must(
            "add_contact",
            self.try_add_contact(directory_id, user_id, new),
        )
    }

    pub fn update_contact(
        &self,
        directory_id: &str,
        user_id: &str,
        contact_id: &str,
        patch: ContactPatch,
    ) -> Contact {
        must(
            "update_contact",
            self.try_update_contact(directory_id, user_id, contact_id, patch),
        )
    }

    pub fn delete_contact(&self, directory_id: &str, user_id: &str, contact_id: &str) {
        must(
            "delete_contact",
            self.try_delete_contact(directory_id, user_id, contact_id),
        )
    }

    fn set_life(
        &self,
        directory_id: &str,
        id: &str,
        from: &[Life],
        to: Life,
    ) -> Result<User, EmulatorError> {
        let tenant = self.inner.require_tenant(directory_id)?;
        let mut data = tenant.write();
        let idx = data
            .index(id)
            .filter(|&i| from.contains(&data.users[i as usize].life))
            .ok_or_else(|| EmulatorError::UnknownUser(id.into()))?;
        data.users[idx as usize].life = to;
        data.touch_user(idx);
        let user = data.users[idx as usize].user.clone();
        drop(data);
        // Soft deletion and restore are `updated`; only a permanent deletion is `deleted`.
        let change = if to == Life::HardDeleted {
            "deleted"
        } else {
            "updated"
        };
        self.notify_user(&tenant.id, &user.id, change);
        Ok(user)
    }

    pub fn try_set_photo(
        &self,
        directory_id: &str,
        user_id: &str,
        photo: Option<Vec<u8>>,
    ) -> Result<(), EmulatorError> {
        let tenant = self.inner.require_tenant(directory_id)?;
        let mut data = tenant.write();
        let (idx, _) = data
            .active(user_id)
            .ok_or_else(|| EmulatorError::UnknownUser(user_id.into()))?;
        data.users[idx as usize].photo = match photo {
            Some(bytes) => Photo::Custom(Arc::new(bytes)),
            None => Photo::None,
        };
        Ok(())
    }

    pub fn try_contacts(
        &self,
        directory_id: &str,
        user_id: &str,
    ) -> Result<Vec<Contact>, EmulatorError> {
        let tenant = self.inner.require_tenant(directory_id)?;
        let data = tenant.read();
        let user = mailbox_index(&data, user_id)?;
        Ok((0..data.contact_total(user))
            .filter_map(|c| data.contact(self.inner.seed, tenant.idx, user, c))
            .collect())
    }

    pub fn try_add_contact(
        &self,
        directory_id: &str,
        user_id: &str,
        new: NewContact,
    ) -> Result<Contact, EmulatorError> {
        let tenant = self.inner.require_tenant(directory_id)?;
        let mut data = tenant.write();
        let user = mailbox_index(&data, user_id)?;
        let c = data.contact_total(user);
        let contact = self.new_contact(&tenant, user, c, new);
        let mailbox = data.mailboxes.entry(user).or_default();
        mailbox.added += 1;
        mailbox.edits.insert(c, Some(contact.clone()));
        data.touch_contact(user, c);
        let owner = data.users[user as usize].user.id.clone();
        drop(data);
        self.notify_contact(&tenant.id, &owner, &contact.id, "created");
        Ok(contact)
    }

    pub fn try_update_contact(
        &self,
        directory_id: &str,
        user_id: &str,
        contact_id: &str,
        patch: ContactPatch,
    ) -> Result<Contact, EmulatorError> {
        let tenant = self.inner.require_tenant(directory_id)?;
        let mut data = tenant.write();
        let (user, c) = self.contact_index(&tenant, &data, user_id, contact_id)?;
        let mut contact = data
            .contact(self.inner.seed, tenant.idx, user, c)
            .ok_or_else(|| EmulatorError::UnknownContact(contact_id.into()))?;
        apply_contact_patch(&mut contact, patch);
        contact.last_modified_date_time = iso(self.inner.now());
        contact.change_key = change_key();
        data.mailboxes
            .entry(user)
            .or_default()
            .edits
            .insert(c, Some(contact.clone()));
        data.touch_contact(user, c);
        let owner = data.users[user as usize].user.id.clone();
        drop(data);
        self.notify_contact(&tenant.id, &owner, &contact.id, "updated");
        Ok(contact)
    }

    pub fn try_delete_contact(
        &self,
        directory_id: &str,
        user_id: &str,
        contact_id: &str,
    ) -> Result<(), EmulatorError> {
        let tenant = self.inner.require_tenant(directory_id)?;
        let mut data = tenant.write();
        let (user, c) = self.contact_index(&tenant, &data, user_id, contact_id)?;
        data.mailboxes
            .entry(user)
            .or_default()
            .edits
            .insert(c, None);
        data.touch_contact(user, c);
        let owner = data.users[user as usize].user.id.clone();
        drop(data);
        self.notify_contact(&tenant.id, &owner, contact_id, "deleted");
        Ok(())
    }

    /// `(user index, contact index)` of an existing contact of `user_id`'s mailbox.
    fn contact_index(
        &self,
        tenant: &Tenant,
        data: &TenantData,
        user_id: &str,
        contact_id: &str,
    ) -> Result<(u32, u32), EmulatorError> {
        let user = mailbox_index(data, user_id)?;
        match seed::parse_contact_id(self.inner.seed, contact_id) {
            Some((t, u, c)) if t == tenant.idx && u == user && data.contact_exists(user, c) => {
                Ok((user, c))
            }
            _ => Err(EmulatorError::UnknownContact(contact_id.into())),
        }
    }

    fn new_contact(&self, tenant: &Tenant, user: u32, c: u32, new: NewContact) -> Contact {
        let now = iso(self.inner.now());
        let file_as = match (&new.surname, &new.given_name) {
            (Some(s), Some(g)) => format!("{s}, {g}"),
            _ => new.display_name.clone(),
        };
        Contact {
            id: seed::contact_id(self.inner.seed, tenant.idx, user, c),
            created_date_time: now.clone(),
            last_modified_date_time: now,
            change_key: change_key(),
            parent_folder_id: seed::folder_id(self.inner.seed, tenant.idx, user),
            file_as,
            display_name: new.display_name,
            given_name: new.given_name,
            surname: new.surname,
            company_name: new.company_name,
            job_title: new.job_title,
            email_addresses: new.email_addresses,
            business_phones: new.business_phones,
            home_phones: new.home_phones,
            mobile_phone: new.mobile_phone,
            business_address: new.business_address,
            home_address: new.home_address,
            personal_notes: new.personal_notes,
            ..Contact::default()
        }
    }
}

/// The in-process API is for tests and the demo, where a wrong id is a bug in the caller:
/// it panics with the reason. The `try_*` methods return the error instead.
fn must<T>(what: &str, result: Result<T, EmulatorError>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn change_key() -> String {
    format!(
        "EQAAABYAAAA{}",
        b64url(&uuid::Uuid::new_v4().as_bytes()[..8])
    )
}

fn mailbox_index(data: &TenantData, user_id: &str) -> Result<u32, EmulatorError> {
    let (idx, record) = data
        .active(user_id)
        .ok_or_else(|| EmulatorError::UnknownUser(user_id.into()))?;
    if !record.mailbox {
        return Err(EmulatorError::NoMailbox(user_id.into()));
    }
    Ok(idx)
}

fn new_user_record(new: NewUser) -> (UserRecord, User) {
    let user_type = new.user_type.unwrap_or_else(|| "Member".into());
    let mailbox = new.has_mailbox.unwrap_or(user_type == "Member");
    let user = User {
        id: guid(),
        user_principal_name: new.user_principal_name,
        display_name: new.display_name,
        given_name: new.given_name,
        surname: new.surname,
        mail: new.mail,
        mobile_phone: new.mobile_phone,
        business_phones: new.business_phones,
        job_title: new.job_title,
        department: new.department,
        office_location: new.office_location,
        preferred_language: None,
        account_enabled: new.account_enabled.unwrap_or(true),
        user_type,
    };
    let photo = if new.photo {
        Photo::Generated(0)
    } else {
        Photo::None
    };
    (seed::record(user.clone(), photo, mailbox, 0), user)
}

fn apply_user_patch(user: &mut User, p: UserPatch) {
    if let Some(v) = p.user_principal_name {
        user.user_principal_name = v;
    }
    if let Some(v) = p.display_name {
        user.display_name = v;
    }
    if let Some(v) = p.given_name {
        user.given_name = v;
    }
    if let Some(v) = p.surname {
        user.surname = v;
    }
    if let Some(v) = p.mail {
        user.mail = v;
    }
    if let Some(v) = p.mobile_phone {
        user.mobile_phone = v;
    }
    if let Some(v) = p.business_phones {
        user.business_phones = v;
    }
    if let Some(v) = p.job_title {
        user.job_title = v;
    }
    if let Some(v) = p.department {
        user.department = v;
    }
    if let Some(v) = p.office_location {
        user.office_location = v;
    }
    if let Some(v) = p.account_enabled {
        user.account_enabled = v;
    }
}

fn apply_contact_patch(c: &mut Contact, p: ContactPatch) {
    if let Some(v) = p.display_name {
        c.display_name = v;
    }
    if let Some(v) = p.given_name {
        c.given_name = v;
    }
    if let Some(v) = p.surname {
        c.surname = v;
    }
    if let Some(v) = p.company_name {
        c.company_name = v;
    }
    if let Some(v) = p.job_title {
        c.job_title = v;
    }
    if let Some(v) = p.email_addresses {
        c.email_addresses = v;
    }
    if let Some(v) = p.business_phones {
        c.business_phones = v;
    }
    if let Some(v) = p.home_phones {
        c.home_phones = v;
    }
    if let Some(v) = p.mobile_phone {
        c.mobile_phone = v;
    }
    if let Some(v) = p.business_address {
        c.business_address = v;
    }
    if let Some(v) = p.home_address {
        c.home_address = v;
    }
    if let Some(v) = p.personal_notes {
        c.personal_notes = v;
    }
}
