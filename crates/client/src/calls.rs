//! Each HSM API call as its wire message and back: [`HsmApi`] for [`Remote`], and the wiping
//! of what a request carried of a secret.

use ferrohsm_audit::{Export, Record, Report};
use ferrohsm_core::api::{
    AuditConfig, AuthMode, BackupSummary, ClientInfo, CloneBatch, CloneHello, CloneProgress,
    CloneSelect, Enrollment, GpAnswer, GpCall, HsmApi, HsmInfo, ImprintReport, InitHsm,
    LoginCredential, LoginId, NewCredential, PartitionDomain, PartitionSummary, PedImprint,
    StagedImprint, Summary, Unwrap, Witness,
};
use ferrohsm_core::mechanism::{KeySpec, Mechanism, Params};
use ferrohsm_core::object::{
    KeyOptions, KeyTemplate, NewObject, ObjectClass, ObjectFilter, ObjectInfo,
};
use ferrohsm_core::pedkey::SecretType;
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{HsmError, Result, Role};
use ferrohsm_proto::v1::{self, request::Call, response::Result as Reply};
use ferrohsm_proto::{convert, Request};

use crate::Remote;

/// Zeroizes what a request carried of a secret (a login's, a new password) once it is sent.
pub(crate) fn wipe(req: Request) {
    use zeroize::Zeroize;
    match req.call {
        Some(Call::InitToken(mut t) | Call::ReinitToken(mut t)) => t.so_password.zeroize(),
        Some(Call::ChangePassword(mut c)) => {
            c.old_password.zeroize();
            c.new_password.zeroize();
        }
        Some(Call::Login(l)) => wipe_login(l),
        Some(Call::Activate(mut a)) => a.challenge.zeroize(),
        Some(Call::Enroll(mut e)) => e.code.zeroize(),
        Some(Call::ImportKey(mut i)) => i.material.zeroize(),
        Some(Call::ChangePin(mut c)) => {
            wipe_credential(c.keys.take());
            if let Some(p) = &mut c.new_pin {
                p.zeroize();
            }
        }
        Some(Call::InitHsm(mut i)) => {
            wipe_new(i.so.take());
            wipe_new(i.domain.take());
            wipe_credential(i.current_so.take());
        }
        Some(Call::InitPartition(mut i)) => {
            wipe_new(i.so.take());
            wipe_new(i.domain.take());
            wipe_credential(i.current_so.take());
            wipe_credential(i.hsm_domain.take());
        }
        Some(Call::InitRole(mut i)) => wipe_new(i.secret.take()),
        Some(Call::Gp(mut g)) => g.json.zeroize(),
        Some(Call::ChangeSecret(mut c)) => wipe_new(c.secret.take()),
        Some(Call::StageImprint(mut st)) => {
            wipe_new(st.imprint.take().map(|i| v1::NewCredential {
                kind: Some(v1::new_credential::Kind::Ped(i)),
            }))
        }
        Some(Call::AuditInit(mut a)) => {
            wipe_new(a.secret.take());
            wipe_credential(a.current.take());
        }
        _ => {}
    }
}

fn wipe_ped_keys(k: &mut v1::PedKeys) {
    use zeroize::Zeroize;
    for f in &mut k.keys {
        f.contents.zeroize();
    }
    if let Some(p) = &mut k.pin {
        p.zeroize();
    }
}

fn wipe_credential(c: Option<v1::Credential>) {
    use zeroize::Zeroize;
    match c.and_then(|c| c.kind) {
        Some(v1::credential::Kind::Secret(mut s)) => s.zeroize(),
        Some(v1::credential::Kind::PedKeys(mut k)) => wipe_ped_keys(&mut k),
        None => {}
    }
}

fn wipe_new(c: Option<v1::NewCredential>) {
    use zeroize::Zeroize;
    match c.and_then(|c| c.kind) {
        Some(v1::new_credential::Kind::Password(mut p)) => p.zeroize(),
        Some(v1::new_credential::Kind::Ped(mut i)) => {
            for f in &mut i.reuse {
                f.contents.zeroize();
            }
            if let Some(p) = &mut i.pin {
                p.zeroize();
            }
        }
        Some(v1::new_credential::Kind::Staged(_)) | None => {}
    }
}

fn wipe_login(mut l: v1::Login) {
    use zeroize::Zeroize;
    {
        match &mut l.credential {
            Some(v1::login::Credential::Secret(s)) => s.zeroize(),
            Some(v1::login::Credential::PedKeys(k)) => wipe_ped_keys(k),
            None => {}
        }
    }
}

fn unexpected(what: &str) -> HsmError {
    HsmError::Store(format!(
        "the server answered {what} with the wrong kind of reply"
    ))
}

fn bytes(r: Reply) -> Result<Vec<u8>> {
    match r {
        Reply::Bytes(b) => Ok(b.value),
        _ => Err(unexpected("a byte-returning call")),
    }
}

fn text(r: Reply) -> Result<String> {
    match r {
        Reply::Text(t) => Ok(t.value),
        _ => Err(unexpected("a text-returning call")),
    }
}

fn done(r: Reply) -> Result<()> {
    match r {
        Reply::Done(_) => Ok(()),
        _ => Err(unexpected("a call with no result")),
    }
}

fn wrap(login: LoginId, wrapper: u64, mech: Mechanism, p: &Params, target: u64) -> v1::Wrap {
    v1::Wrap {
        login,
        wrapper,
        mechanism: mech.to_string(),
        iv: p.iv.clone(),
        aad: p.aad.clone(),
        label: p.label.clone(),
        target,
    }
}

fn crypt(login: LoginId, key: u64, mech: Mechanism, p: &Params, data: &[u8]) -> v1::Crypt {
    v1::Crypt {
        login,
        key,
        mechanism: mech.to_string(),
        iv: p.iv.clone(),
        aad: p.aad.clone(),
        label: p.label.clone(),
        data: data.to_vec(),
    }
}

fn number(r: Reply) -> Result<u64> {
    match r {
        Reply::Number(n) => Ok(n.value),
        _ => Err(unexpected("a number-returning call")),
    }
}

fn one_handle(r: Reply) -> Result<u64> {
    match r {
        Reply::Handles(h) if h.handles.len() == 1 => Ok(h.handles[0]),
        _ => Err(unexpected("a call that makes one object")),
    }
}

fn objects(r: Reply) -> Result<Vec<ObjectInfo>> {
    match r {
        Reply::Objects(o) => o
            .objects
            .into_iter()
            .map(convert::object_from_wire)
            .collect(),
        _ => Err(unexpected("a call that returns objects")),
    }
}

fn secret(p: &Pin) -> Vec<u8> {
    p.expose().to_vec()
}

fn imprints(r: Reply) -> Result<Vec<ImprintReport>> {
    match r {
        Reply::Imprints(i) => convert::imprints_from_wire(i),
        _ => Err(unexpected("an imprinting call")),
    }
}

fn witnesses(r: Reply) -> Result<Vec<Witness>> {
    match r {
        Reply::Witnesses(w) => Ok(w
            .witnesses
            .into_iter()
            .map(convert::witness_from_wire)
            .collect()),
        _ => Err(unexpected("a witness call")),
    }
}

fn clients(r: Reply) -> Result<Vec<ClientInfo>> {
    match r {
        Reply::Clients(c) => Ok(convert::clients_from_wire(c)),
        _ => Err(unexpected("a client registry call")),
    }
}

fn one_client(r: Reply) -> Result<ClientInfo> {
    clients(r)?
        .pop()
        .ok_or_else(|| unexpected("a client registry call"))
}

impl HsmApi for Remote {
    fn register_client(
        &mut self,
        login: LoginId,
        name: &str,
        fingerprint: &str,
    ) -> Result<ClientInfo> {
        one_client(self.call(Call::RegisterClient(v1::RegisterClient {
            login,
            name: name.into(),
            fingerprint: fingerprint.into(),
        }))?)
    }

    fn clients(&mut self, login: LoginId) -> Result<Vec<ClientInfo>> {
        clients(self.call(Call::Clients(v1::LoginOnly { login }))?)
    }

    fn assign_client(
        &mut self,
        login: LoginId,
        client: &str,
        partition: &str,
        assign: bool,
    ) -> Result<ClientInfo> {
        one_client(self.call(Call::AssignClient(v1::AssignClient {
            login,
            client: client.into(),
            partition: partition.into(),
            assign,
        }))?)
    }

    fn revoke_client(&mut self, login: LoginId, client: &str) -> Result<ClientInfo> {
        one_client(self.call(Call::RevokeClient(v1::ClientRef {
            login,
            client: client.into(),
        }))?)
    }

    fn rekey_client(
        &mut self,
        login: LoginId,
        client: &str,
        fingerprint: &str,
    ) -> Result<ClientInfo> {
        one_client(self.call(Call::RekeyClient(v1::RegisterClient {
            login,
            name: client.into(),
            fingerprint: fingerprint.into(),
        }))?)
    }

    fn issue_enrollment(
        &mut self,
        login: LoginId,
        name: &str,
        partitions: &[String],
        valid_for_s: u64,
    ) -> Result<Enrollment> {
        match self.call(Call::IssueEnrollment(v1::IssueEnrollment {
            login,
            name: name.into(),
            partitions: partitions.to_vec(),
            valid_for_s,
        }))? {
            Reply::Enrollment(e) => Ok(convert::enrollment_from_wire(e)),
            _ => Err(unexpected("issue-enrollment")),
        }
    }

    fn enroll(&mut self, code: &str, fingerprint: &str) -> Result<ClientInfo> {
        one_client(self.call(Call::Enroll(v1::Enroll {
            code: code.into(),
            fingerprint: fingerprint.into(),
        }))?)
    }

    fn stage_imprint(
        &mut self,
        imprint: PedImprint,
        secret_type: SecretType,
        label: &str,
    ) -> Result<StagedImprint> {
        match self.call(Call::StageImprint(v1::StageImprint {
            imprint: Some(convert::ped_imprint_to_wire(&imprint)),
            secret_type: convert::secret_type_to_wire(secret_type),
            label: label.into(),
        }))? {
            Reply::Staged(s) => Ok(StagedImprint {
                stage: s.stage,
                report: convert::imprint_from_wire(
                    s.imprint.ok_or_else(|| unexpected("a staged imprint"))?,
                )?,
            }),
            _ => Err(unexpected("a staged imprint")),
        }
    }

    fn secret_in_use(&mut self, secret_id: &str) -> Result<bool> {
        match self.call(Call::SecretInUse(v1::Text {
            value: secret_id.into(),
        }))? {
            Reply::Verified(v) => Ok(v.valid),
            _ => Err(unexpected("a secret-in-use answer")),
        }
    }

    fn init_hsm(&mut self, init: InitHsm) -> Result<Vec<ImprintReport>> {
        imprints(
            self.call(Call::InitHsm(v1::InitHsm {
                label: init.label,
                auth_mode: match init.mode {
                    AuthMode::Ped => "ped",
                    AuthMode::Password => "password",
                }
                .into(),
                so: Some(convert::new_credential_to_wire(&init.so)),
                domain: Some(convert::new_credential_to_wire(&init.domain)),
                current_so: init
                    .current_so
                    .as_ref()
                    .map(convert::bare_credential_to_wire),
                confirm_destroy: init.confirm_destroy,
                backup: init.backup,
            }))?,
        )
    }

    fn init_partition(
        &mut self,
        label: &str,
        so: NewCredential,
        domain: PartitionDomain,
        current_so: Option<LoginCredential>,
    ) -> Result<Vec<ImprintReport>> {
        let (new, hsm) = match &domain {
            PartitionDomain::None => (None, None),
            PartitionDomain::Hsm(c) => (None, Some(convert::bare_credential_to_wire(c))),
            PartitionDomain::New(n) => (Some(convert::new_credential_to_wire(n)), None),
        };
        imprints(self.call(Call::InitPartition(v1::InitPartition {
            label: label.into(),
            so: Some(convert::new_credential_to_wire(&so)),
            domain: new,
            current_so: current_so.as_ref().map(convert::bare_credential_to_wire),
            hsm_domain: hsm,
        }))?)
    }

    fn init_role(
        &mut self,
        login: LoginId,
        role: Role,
        secret: NewCredential,
        confirm_destroy: bool,
    ) -> Result<Option<ImprintReport>> {
        Ok(imprints(self.call(Call::InitRole(v1::InitRole {
            login,
            role: role.short().into(),
            secret: Some(convert::new_credential_to_wire(&secret)),
            confirm_destroy,
        }))?)?
        .pop())
    }

    fn change_secret(
        &mut self,
        login: LoginId,
        secret: NewCredential,
    ) -> Result<Option<ImprintReport>> {
        Ok(imprints(self.call(Call::ChangeSecret(v1::ChangeSecret {
            login,
            secret: Some(convert::new_credential_to_wire(&secret)),
        }))?)?
        .pop())
    }

    fn change_pin(
        &mut self,
        login: LoginId,
        keys: LoginCredential,
        new_pin: Option<Pin>,
    ) -> Result<()> {
        done(self.call(Call::ChangePin(v1::ChangePin {
            login,
            keys: Some(convert::bare_credential_to_wire(&keys)),
            new_pin: new_pin.as_ref().map(secret),
        }))?)
    }

    fn audit_init(
        &mut self,
        secret: NewCredential,
        current: Option<LoginCredential>,
    ) -> Result<Option<ImprintReport>> {
        Ok(imprints(self.call(Call::AuditInit(v1::AuditInit {
            secret: Some(convert::new_credential_to_wire(&secret)),
            current: current.as_ref().map(convert::bare_credential_to_wire),
        }))?)?
        .pop())
    }

    fn set_hsm_policy(&mut self, login: LoginId, name: &str, value: &str) -> Result<()> {
        done(self.call(Call::SetHsmPolicy(v1::SetPolicy {
            login,
            name: name.into(),
            value: value.into(),
        }))?)
    }

    fn set_partition_policy(&mut self, login: LoginId, name: &str, value: &str) -> Result<()> {
        done(self.call(Call::SetPartitionPolicy(v1::SetPolicy {
            login,
            name: name.into(),
            value: value.into(),
        }))?)
    }

    fn create_partition(&mut self, login: LoginId, label: &str) -> Result<u32> {
        let id = number(self.call(Call::CreatePartition(v1::PartitionCall {
            login,
            label: label.into(),
        }))?)?;
        u32::try_from(id).map_err(|_| unexpected("create-partition"))
    }

    fn delete_partition(&mut self, login: LoginId, label: &str) -> Result<u64> {
        number(self.call(Call::DeletePartition(v1::PartitionCall {
            login,
            label: label.into(),
        }))?)
    }

    fn reset_role(&mut self, login: LoginId, role: Role) -> Result<()> {
        done(self.call(Call::ResetRole(v1::RoleCall {
            login,
            role: role.short().into(),
        }))?)
    }

    fn activate(&mut self, login: LoginId, challenge: Pin) -> Result<()> {
        done(self.call(Call::Activate(v1::Activate {
            login,
            challenge: secret(&challenge),
        }))?)
    }

    fn deactivate(&mut self, login: LoginId, role: Role) -> Result<bool> {
        match self.call(Call::Deactivate(v1::RoleCall {
            login,
            role: role.short().into(),
        }))? {
            Reply::Verified(v) => Ok(v.valid),
            _ => Err(unexpected("deactivate")),
        }
    }

    fn audit_config(&mut self, login: LoginId) -> Result<AuditConfig> {
        match self.call(Call::AuditConfig(v1::AuditorCall { login }))? {
            Reply::AuditConfig(c) => convert::audit_config_from_wire(Some(c)),
            _ => Err(unexpected("audit-config")),
        }
    }

    fn set_audit_config(&mut self, login: LoginId, config: AuditConfig) -> Result<()> {
        done(self.call(Call::SetAuditConfig(v1::SetAuditConfig {
            login,
            config: Some(convert::audit_config_to_wire(&config)),
        }))?)
    }

    fn witnesses(&mut self, login: LoginId) -> Result<Vec<Witness>> {
        witnesses(self.call(Call::Witnesses(v1::AuditorCall { login }))?)
    }

    fn add_witness(&mut self, login: LoginId, vkey: &str) -> Result<Witness> {
        witnesses(self.call(Call::AddWitness(v1::AddWitness {
            login,
            vkey: vkey.into(),
        }))?)?
        .pop()
        .ok_or_else(|| unexpected("add-witness"))
    }

    fn submit_cosigned(&mut self, login: LoginId, note: &str) -> Result<Vec<String>> {
        match self.call(Call::SubmitCosigned(v1::SubmitCosigned {
            login,
            note: note.into(),
        }))? {
            Reply::Strings(s) => Ok(s.values),
            _ => Err(unexpected("submit-cosigned")),
        }
    }

    fn info(&mut self) -> Result<HsmInfo> {
        text(self.call(Call::Info(v1::Info {}))?)
            .and_then(|value| convert::info_from_wire(v1::Text { value }))
    }

    fn state_generation(&mut self) -> Result<u64> {
        number(self.call(Call::StateGeneration(v1::Info {}))?)
    }

    fn init_token(&mut self, label: &str, so_password: Pin) -> Result<u32> {
        let id = number(self.call(Call::InitToken(v1::InitToken {
            label: label.to_string(),
            so_password: secret(&so_password),
        }))?)?;
        u32::try_from(id).map_err(|_| unexpected("init-token"))
    }

    fn reinit_token(&mut self, label: &str, so_password: Pin) -> Result<()> {
        done(self.call(Call::ReinitToken(v1::InitToken {
            label: label.to_string(),
            so_password: secret(&so_password),
        }))?)
    }

    fn change_password(&mut self, role: Role, partition: &str, old: Pin, new: Pin) -> Result<()> {
        done(self.call(Call::ChangePassword(v1::ChangePassword {
            role: role.short().to_string(),
            partition: partition.to_string(),
            old_password: secret(&old),
            new_password: secret(&new),
        }))?)
    }

    fn find(
        &mut self,
        login: Option<LoginId>,
        partition: &str,
        filter: &ObjectFilter,
    ) -> Result<Vec<ObjectInfo>> {
        objects(self.call(Call::Find(v1::Find {
            login,
            partition: partition.to_string(),
            label: filter.label.clone(),
            object_id: filter.id.clone(),
            class: filter.class.map(|c| c.name().to_string()),
        }))?)
    }

    fn object_info(
        &mut self,
        login: Option<LoginId>,
        partition: &str,
        handle: u64,
    ) -> Result<ObjectInfo> {
        objects(self.call(Call::ObjectInfo(v1::GetObject {
            login,
            partition: partition.to_string(),
            handle,
        }))?)?
        .pop()
        .ok_or_else(|| unexpected("object-info"))
    }

    fn generate_key_with(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<Vec<u64>> {
        match self.call(Call::GenerateKeyWith(v1::GenerateKeyWith {
            login,
            key_type: spec.to_string(),
            key: Some(convert::key_options_to_wire(opts)),
            template: Some(convert::key_template_to_wire(tpl)),
        }))? {
            Reply::Handles(h) => Ok(h.handles),
            _ => Err(unexpected("generate-key-with")),
        }
    }

    fn create_object(&mut self, login: LoginId, object: NewObject) -> Result<u64> {
        one_handle(self.call(Call::CreateObject(convert::new_object_to_wire(
            login, &object,
        )))?)
    }

    fn import_public_key(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        spki: &[u8],
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        one_handle(self.call(Call::ImportPublicKey(v1::ImportPublicKey {
            login,
            key_type: spec.to_string(),
            spki: spki.to_vec(),
            key: Some(convert::key_options_to_wire(opts)),
            template: Some(convert::key_template_to_wire(tpl)),
        }))?)
    }

    fn key_value(&mut self, login: LoginId, handle: u64) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        bytes(self.call(Call::KeyValue(v1::DestroyObject { login, handle }))?)
            .map(zeroize::Zeroizing::new)
    }

    fn import_key(
        &mut self,
        login: LoginId,
        class: ObjectClass,
        spec: Option<KeySpec>,
        material: &[u8],
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        one_handle(self.call(Call::ImportKey(v1::ImportKey {
            login,
            class: class.name().into(),
            key_type: spec.map(|s| s.to_string()),
            material: material.to_vec(),
            key: Some(convert::key_options_to_wire(opts)),
            template: Some(convert::key_template_to_wire(tpl)),
        }))?)
    }

    fn set_key_trusted(&mut self, login: LoginId, label: &str, trusted: bool) -> Result<u64> {
        number(self.call(Call::SetKeyTrusted(v1::TrustKey {
            login,
            label: label.into(),
            trusted,
        }))?)
    }

    fn copy_object(
        &mut self,
        login: LoginId,
        handle: u64,
        c: &ferrohsm_core::object::CopyChanges,
    ) -> Result<u64> {
        number(self.call(Call::CopyObject(v1::CopyObject {
            login,
            handle,
            label: c.label.clone(),
            object_id: c.id.clone(),
            token: c.token,
            sensitive: c.sensitive,
            extractable: c.extractable,
            copyable: c.copyable,
            session_owner: c.session_owner,
        }))?)
    }

    fn relabel_object(
        &mut self,
        login: LoginId,
        handle: u64,
        label: Option<&str>,
        object_id: Option<&[u8]>,
    ) -> Result<()> {
        done(self.call(Call::RelabelObject(v1::Relabel {
            login,
            handle,
            label: label.map(str::to_string),
            object_id: object_id.map(<[u8]>::to_vec),
        }))?)
    }

    fn drop_session_objects(&mut self, login: LoginId, owner: u64) -> Result<()> {
        done(self.call(Call::DropSessionObjects(v1::DropSessionObjects {
            login,
            owner,
        }))?)
    }

    fn wrapped_key_len(
        &mut self,
        login: LoginId,
        wrapper: u64,
        mech: Mechanism,
        target: u64,
    ) -> Result<usize> {
        let n = number(self.call(Call::WrappedKeyLen(wrap(
            login,
            wrapper,
            mech,
            &Params::default(),
            target,
        )))?)?;
        usize::try_from(n).map_err(|_| unexpected("wrapped-key-len"))
    }

    fn wrap_key(
        &mut self,
        login: LoginId,
        wrapper: u64,
        mech: Mechanism,
        params: &Params,
        target: u64,
    ) -> Result<Vec<u8>> {
        bytes(self.call(Call::WrapKey(wrap(login, wrapper, mech, params, target)))?)
    }

    fn unwrap_key(&mut self, login: LoginId, u: Unwrap<'_>) -> Result<u64> {
        one_handle(self.call(Call::UnwrapKey(v1::UnwrapKey {
            login,
            unwrapper: u.unwrapper,
            mechanism: u.mech.to_string(),
            iv: u.params.iv.clone(),
            aad: u.params.aad.clone(),
            label: u.params.label.clone(),
            wrapped: u.wrapped.to_vec(),
            class: u.class.name().to_string(),
            key_type: u.spec.map(|s| s.to_string()),
            key: Some(convert::key_options_to_wire(u.opts)),
            template: Some(convert::key_template_to_wire(u.tpl)),
        }))?)
    }

    fn derive_ecdh(
        &mut self,
        login: LoginId,
        base: u64,
        peer_point: &[u8],
        spec: KeySpec,
        opts: &KeyOptions,
        tpl: &KeyTemplate,
    ) -> Result<u64> {
        one_handle(self.call(Call::DeriveEcdh(v1::DeriveEcdh {
            login,
            base,
            peer_point: peer_point.to_vec(),
            key_type: spec.to_string(),
            key: Some(convert::key_options_to_wire(opts)),
            template: Some(convert::key_template_to_wire(tpl)),
        }))?)
    }

    fn summary(&mut self) -> Result<Summary> {
        match self.call(Call::Summary(v1::Summary {}))? {
            Reply::Summary(s) => Ok(Summary {
                serial: s.serial,
                state: s.state,
                label: s.label,
                auth_mode: s.auth_mode,
                partitions: s
                    .partitions
                    .into_iter()
                    .map(|p| PartitionSummary {
                        id: p.id,
                        label: p.label,
                        initialised: p.initialised,
                    })
                    .collect(),
                tamper: s.tamper,
            }),
            _ => Err(unexpected("summary")),
        }
    }

    fn login(
        &mut self,
        role: Role,
        partition: Option<&str>,
        credential: LoginCredential,
    ) -> Result<LoginId> {
        // The request (and so the secret's copy in it) lives only until it is sent.
        let call = Call::Login(v1::Login {
            role: role.short().to_string(),
            partition: partition.map(str::to_string),
            credential: Some(convert::credential_to_wire(&credential)),
        });
        match self.call(call)? {
            Reply::Login(l) => Ok(l.login),
            _ => Err(unexpected("login")),
        }
    }

    fn check_login(&mut self, login: LoginId) -> Result<()> {
        done(self.call(Call::CheckLogin(v1::Logout { login }))?)
    }

    fn logout(&mut self, login: LoginId) -> Result<()> {
        done(self.call(Call::Logout(v1::Logout { login }))?)
    }

    fn generate_key(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        opts: &KeyOptions,
    ) -> Result<Vec<u64>> {
        match self.call(Call::GenerateKey(v1::GenerateKey {
            login,
            key_type: spec.to_string(),
            label: opts.label.clone(),
            object_id: opts.id.clone(),
            extractable: opts.extractable,
        }))? {
            Reply::Handles(h) => Ok(h.handles),
            _ => Err(unexpected("generate-key")),
        }
    }

    fn generate_keys(
        &mut self,
        login: LoginId,
        spec: KeySpec,
        each: &[KeyOptions],
    ) -> Result<Vec<Vec<u64>>> {
        match self.call(Call::GenerateKeys(v1::GenerateKeys {
            login,
            key_type: spec.to_string(),
            keys: each.iter().map(convert::key_options_to_wire).collect(),
        }))? {
            Reply::HandleSets(h) => Ok(h.sets.into_iter().map(|s| s.handles).collect()),
            _ => Err(unexpected("generate-keys")),
        }
    }

    fn find_objects(&mut self, login: LoginId, label: Option<&str>) -> Result<Vec<ObjectInfo>> {
        match self.call(Call::FindObjects(v1::FindObjects {
            login,
            label: label.map(str::to_string),
        }))? {
            Reply::Objects(o) => o
                .objects
                .into_iter()
                .map(convert::object_from_wire)
                .collect(),
            _ => Err(unexpected("find-objects")),
        }
    }

    fn sign(&mut self, login: LoginId, key: u64, mech: Mechanism, data: &[u8]) -> Result<Vec<u8>> {
        bytes(self.call(Call::Sign(v1::Sign {
            login,
            key,
            mechanism: mech.to_string(),
            data: data.to_vec(),
        }))?)
    }

    fn verify(
        &mut self,
        login: LoginId,
        key: u64,
        mech: Mechanism,
        data: &[u8],
        signature: &[u8],
    ) -> Result<bool> {
        match self.call(Call::Verify(v1::Verify {
            login,
            key,
            mechanism: mech.to_string(),
            data: data.to_vec(),
            signature: signature.to_vec(),
        }))? {
            Reply::Verified(v) => Ok(v.valid),
            _ => Err(unexpected("verify")),
        }
    }

    fn encrypt(
        &mut self,
        login: LoginId,
        key: u64,
        mech: Mechanism,
        params: &Params,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        bytes(self.call(Call::Encrypt(crypt(login, key, mech, params, data)))?)
    }

    fn decrypt(
        &mut self,
        login: LoginId,
        key: u64,
        mech: Mechanism,
        params: &Params,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        bytes(self.call(Call::Decrypt(crypt(login, key, mech, params, data)))?)
    }

    fn destroy_object(&mut self, login: LoginId, handle: u64) -> Result<()> {
        done(self.call(Call::DestroyObject(v1::DestroyObject { login, handle }))?)
    }

    fn random(&mut self, len: usize) -> Result<Vec<u8>> {
        let length = u32::try_from(len)
            .map_err(|_| HsmError::InvalidInput(format!("{len} random bytes is too many")))?;
        bytes(self.call(Call::Random(v1::Random { length }))?)
    }

    fn zeroize(&mut self, login: LoginId, reason: &str) -> Result<()> {
        done(self.call(Call::Zeroize(v1::Zeroize {
            login,
            reason: reason.to_string(),
        }))?)
    }

    fn tamper(&mut self, login: LoginId) -> Result<()> {
        done(self.call(Call::Tamper(v1::DeviceAction { login }))?)
    }

    fn restart(&mut self, login: LoginId) -> Result<u64> {
        match self.call(Call::Restart(v1::DeviceAction { login }))? {
            Reply::Epoch(e) => Ok(e.epoch),
            _ => Err(unexpected("restart")),
        }
    }

    fn audit_public_key(&mut self) -> Result<String> {
        text(self.call(Call::AuditPublicKey(v1::AuditPublicKey {}))?)
    }

    fn audit_records(&mut self, login: LoginId) -> Result<Vec<Record>> {
        match self.call(Call::AuditRecords(v1::AuditorCall { login }))? {
            Reply::AuditRecords(r) => convert::records_from_wire(r),
            _ => Err(unexpected("audit-records")),
        }
    }

    fn pending_ceremonies(&mut self, login: LoginId) -> Result<Vec<(Record, usize)>> {
        match self.call(Call::PendingCeremonies(v1::AuditorCall { login }))? {
            Reply::Pending(p) => p
                .records
                .into_iter()
                .map(|r| {
                    Ok((
                        convert::record_from_wire(&r.record)?,
                        r.cosignatures as usize,
                    ))
                })
                .collect(),
            _ => Err(unexpected("pending-ceremonies")),
        }
    }

    fn audit_checkpoint(&mut self, login: LoginId) -> Result<String> {
        text(self.call(Call::AuditCheckpoint(v1::AuditorCall { login }))?)
    }

    fn clone_accept(&mut self, login: LoginId, replace: bool) -> Result<CloneHello> {
        let t = text(self.call(Call::CloneAccept(v1::CloneCall {
            login,
            replace,
            ..Default::default()
        }))?)?;
        convert::clone_from_json(t.as_bytes(), "hello")
    }

    fn clone_offer(
        &mut self,
        login: LoginId,
        target: &CloneHello,
        select: &CloneSelect,
    ) -> Result<CloneHello> {
        let mut c = v1::CloneCall {
            login,
            hello: convert::clone_json(target)?,
            ..Default::default()
        };
        convert::clone_select_to_wire(select, &mut c);
        let t = text(self.call(Call::CloneOffer(c))?)?;
        convert::clone_from_json(t.as_bytes(), "hello")
    }

    fn clone_confirm(&mut self, login: LoginId, source: &CloneHello) -> Result<String> {
        text(self.call(Call::CloneConfirm(v1::CloneCall {
            login,
            hello: convert::clone_json(source)?,
            ..Default::default()
        }))?)
    }

    fn clone_export(
        &mut self,
        login: LoginId,
        session: &str,
        target_proof: &str,
        from: u64,
        max: u32,
    ) -> Result<CloneBatch> {
        match self.call(Call::CloneExport(v1::CloneCall {
            login,
            session: session.into(),
            proof: target_proof.into(),
            from,
            max,
            ..Default::default()
        }))? {
            Reply::Bytes(b) => convert::clone_from_json(&b.value, "batch"),
            _ => Err(unexpected("a clone batch")),
        }
    }

    fn clone_import(
        &mut self,
        login: LoginId,
        session: &str,
        batch: &CloneBatch,
    ) -> Result<CloneProgress> {
        let t = text(self.call(Call::CloneImport(v1::CloneCall {
            login,
            session: session.into(),
            batch: convert::clone_json(batch)?.into_bytes(),
            ..Default::default()
        }))?)?;
        convert::clone_from_json(t.as_bytes(), "progress")
    }

    fn backup_export(&mut self, login: LoginId, select: &CloneSelect) -> Result<Vec<u8>> {
        let mut c = v1::CloneCall {
            login,
            ..Default::default()
        };
        convert::clone_select_to_wire(select, &mut c);
        match self.call(Call::BackupExport(c))? {
            Reply::Bytes(b) => Ok(b.value),
            _ => Err(unexpected("a backup")),
        }
    }

    fn backup_verify(&mut self, login: LoginId, file: &[u8]) -> Result<BackupSummary> {
        let t = text(self.call(Call::BackupVerify(v1::CloneCall {
            login,
            batch: file.to_vec(),
            ..Default::default()
        }))?)?;
        convert::clone_from_json(t.as_bytes(), "backup summary")
    }

    fn backup_restore(
        &mut self,
        login: LoginId,
        file: &[u8],
        replace: bool,
    ) -> Result<(u64, u64, u64)> {
        let t = text(self.call(Call::BackupRestore(v1::CloneCall {
            login,
            batch: file.to_vec(),
            replace,
            ..Default::default()
        }))?)?;
        convert::clone_from_json(t.as_bytes(), "restore counts")
    }

    fn audit_check_extends(&mut self, login: LoginId, note: &str) -> Result<u64> {
        number(self.call(Call::AuditCheckExtends(v1::CheckpointNote {
            login,
            note: note.into(),
        }))?)
    }

    fn ha_note(&mut self, login: LoginId, group: &str, event: &str, member: &str) -> Result<()> {
        done(self.call(Call::HaNote(v1::HaNote {
            login,
            group: group.into(),
            event: event.into(),
            member: member.into(),
        }))?)
    }

    fn gp(&mut self, login: LoginId, call: GpCall) -> Result<GpAnswer> {
        let json = convert::clone_json(&call)?;
        let t = text(self.call(Call::Gp(v1::GpRequest { login, json }))?)?;
        convert::clone_from_json(t.as_bytes(), "GlobalPlatform answer")
    }

    fn destroyed_objects(&mut self, login: LoginId) -> Result<Vec<String>> {
        let t = text(self.call(Call::DestroyedObjects(v1::AuditorCall { login }))?)?;
        convert::clone_from_json(t.as_bytes(), "list of destroyed objects")
    }

    fn audit_export(&mut self, login: LoginId, from: u64, earlier: &[u64]) -> Result<Export> {
        let b = bytes(self.call(Call::AuditExport(v1::AuditExport {
            login,
            from,
            earlier: earlier.to_vec(),
        }))?)?;
        Export::from_bytes(&b)
            .map_err(|e| HsmError::Store(format!("audit export from the server: {e}")))
    }

    fn audit_verify(&mut self, login: LoginId) -> Result<Report> {
        match self.call(Call::AuditVerify(v1::AuditorCall { login }))? {
            Reply::Report(r) => Ok(convert::report_from_wire(r)),
            _ => Err(unexpected("audit-verify")),
        }
    }
}
