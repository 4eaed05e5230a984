//! Engine values to wire messages and back, each in one place (the server and the client
//! both use these).

use std::str::FromStr;

use ferrohsm_audit::{Record, Report};
use ferrohsm_core::api::{
    AuditConfig, ClientInfo, CloneSelect, Enrollment, HsmInfo, ImprintReport, KeyUseAudit,
    LoginCredential, NewCredential, PedImprint, Witness,
};
use ferrohsm_core::attr_template::AttrTemplate;
use ferrohsm_core::mechanism::KeySpec;
use ferrohsm_core::object::{
    Attributes, Content, KeyOptions, KeyTemplate, NewObject, ObjectClass, ObjectInfo,
};
use ferrohsm_core::pedkey::SecretType;
use ferrohsm_core::secret::Pin;
use ferrohsm_core::{HsmError, Result};
use zeroize::Zeroizing;

use crate::v1;

/// An object as sent to a client.
pub fn object_to_wire(o: &ObjectInfo) -> v1::ObjectInfo {
    let a = &o.attrs;
    v1::ObjectInfo {
        handle: o.handle,
        attributes: Some(v1::Attributes {
            class: a.class.name().to_string(),
            key_type: a.spec.map(|s| s.to_string()),
            label: a.label.clone(),
            object_id: a.id.clone(),
            token: a.token,
            private: a.private,
            sensitive: a.sensitive,
            extractable: a.extractable,
            always_sensitive: a.always_sensitive,
            never_extractable: a.never_extractable,
            local: a.local,
            modifiable: a.modifiable,
            destroyable: a.destroyable,
            sign: a.sign,
            verify: a.verify,
            encrypt: a.encrypt,
            decrypt: a.decrypt,
            wrap: a.wrap,
            unwrap: a.unwrap,
            derive: a.derive,
            wrap_with_trusted: a.wrap_with_trusted,
            trusted: a.trusted,
            created: a.created.clone(),
            copyable: Some(a.copyable),
            wrap_template: template_to_wire(&a.wrap_template),
            unwrap_template: template_to_wire(&a.unwrap_template),
            unique_id: a.unique_id.clone(),
            gp: a
                .gp
                .as_ref()
                .and_then(|g| serde_json::to_string(g).ok())
                .unwrap_or_default(),
        }),
        public: o.public.clone(),
        content: o.content.as_ref().map(|c| match content_to_wire(c) {
            WireContent::Certificate(c) => v1::object_info::Content::Certificate(c),
            WireContent::Data(d) => v1::object_info::Content::Data(d),
        }),
    }
}

/// An object as a client receives it; a malformed one is an error, never a guess.
pub fn object_from_wire(o: v1::ObjectInfo) -> Result<ObjectInfo> {
    let a = o
        .attributes
        .ok_or_else(|| HsmError::Store("the server sent an object without attributes".into()))?;
    let attrs = Attributes {
        class: ObjectClass::from_name(&a.class)?,
        spec: a.key_type.as_deref().map(KeySpec::from_str).transpose()?,
        label: a.label,
        id: a.object_id,
        token: a.token,
        private: a.private,
        sensitive: a.sensitive,
        extractable: a.extractable,
        always_sensitive: a.always_sensitive,
        never_extractable: a.never_extractable,
        local: a.local,
        modifiable: a.modifiable,
        destroyable: a.destroyable,
        sign: a.sign,
        verify: a.verify,
        encrypt: a.encrypt,
        decrypt: a.decrypt,
        wrap: a.wrap,
        unwrap: a.unwrap,
        derive: a.derive,
        wrap_with_trusted: a.wrap_with_trusted,
        trusted: a.trusted,
        copyable: a.copyable.unwrap_or(true),
        wrap_template: template_from_wire(&a.wrap_template)?,
        unwrap_template: template_from_wire(&a.unwrap_template)?,
        created: a.created,
        unique_id: a.unique_id,
        gp: if a.gp.is_empty() {
            None
        } else {
            Some(serde_json::from_str(&a.gp).map_err(|e| {
                HsmError::InvalidInput(format!("a malformed GlobalPlatform marker: {e}"))
            })?)
        },
    };
    let content = match o.content {
        None => None,
        Some(v1::object_info::Content::Certificate(c)) => Some(certificate_from_wire(c)?),
        Some(v1::object_info::Content::Data(d)) => Some(data_from_wire(d)),
    };
    Ok(ObjectInfo {
        handle: o.handle,
        attrs,
        public: o.public,
        content,
    })
}

/// A certificate's or data object's content, before it goes into one message's `oneof`.
enum WireContent {
    Certificate(v1::Certificate),
    Data(v1::DataObject),
}

fn content_to_wire(c: &Content) -> WireContent {
    match c {
        Content::Certificate {
            value,
            subject,
            issuer,
            serial,
            category,
        } => WireContent::Certificate(v1::Certificate {
            value: value.clone(),
            subject: subject.clone(),
            issuer: issuer.clone(),
            serial: serial.clone(),
            category: u32::from(*category),
        }),
        Content::Data {
            application,
            object_id,
            value,
        } => WireContent::Data(v1::DataObject {
            application: application.clone(),
            object_id: object_id.clone(),
            value: value.clone(),
        }),
    }
}

fn certificate_from_wire(c: v1::Certificate) -> Result<Content> {
    Ok(Content::Certificate {
        value: c.value,
        subject: c.subject,
        issuer: c.issuer,
        serial: c.serial,
        category: u8::try_from(c.category)
            .map_err(|_| HsmError::InvalidInput("certificate category out of range".into()))?,
    })
}

fn data_from_wire(d: v1::DataObject) -> Content {
    Content::Data {
        application: d.application,
        object_id: d.object_id,
        value: d.value,
    }
}

/// A certificate or data object to create, as sent.
pub fn new_object_to_wire(login: u64, o: &NewObject) -> v1::CreateObject {
    let content = Some(match content_to_wire(&o.content) {
        WireContent::Certificate(c) => v1::create_object::Content::Certificate(c),
        WireContent::Data(d) => v1::create_object::Content::Data(d),
    });
    v1::CreateObject {
        login,
        label: o.label.clone(),
        object_id: o.id.clone(),
        private: o.private,
        modifiable: o.modifiable,
        destroyable: o.destroyable,
        content,
    }
}

/// A certificate or data object to create, as received.
pub fn new_object_from_wire(c: v1::CreateObject) -> Result<NewObject> {
    let content = match c.content {
        Some(v1::create_object::Content::Certificate(x)) => certificate_from_wire(x)?,
        Some(v1::create_object::Content::Data(d)) => data_from_wire(d),
        None => {
            return Err(HsmError::InvalidInput(
                "an object to create needs its content (a certificate or data)".into(),
            ))
        }
    };
    Ok(NewObject {
        label: c.label,
        id: c.object_id,
        private: c.private,
        modifiable: c.modifiable,
        destroyable: c.destroyable,
        content,
    })
}

/// PKCS#11 template overrides as sent.
pub fn key_template_to_wire(t: &KeyTemplate) -> v1::KeyTemplate {
    v1::KeyTemplate {
        private: t.private,
        sensitive: t.sensitive,
        sign: t.sign,
        verify: t.verify,
        encrypt: t.encrypt,
        decrypt: t.decrypt,
        wrap: t.wrap,
        unwrap: t.unwrap,
        derive: t.derive,
        wrap_with_trusted: t.wrap_with_trusted,
        copyable: t.copyable,
        wrap_template: template_to_wire(&t.wrap_template),
        unwrap_template: template_to_wire(&t.unwrap_template),
        public_label: t.public_label.clone(),
        public_id: t.public_id.clone(),
        unique_label: t.unique_label,
        session_private: t.session_private,
        session_public: t.session_public,
        session_owner: t.session_owner,
    }
}

/// An attribute template as the wire carries it (the engine's JSON; empty: none).
fn template_to_wire(t: &AttrTemplate) -> String {
    if t.is_empty() {
        return String::new();
    }
    serde_json::to_string(t).unwrap_or_default()
}

/// An attribute template from the wire; a malformed one is an error, never ignored.
fn template_from_wire(s: &str) -> Result<AttrTemplate> {
    if s.is_empty() {
        return Ok(AttrTemplate::default());
    }
    serde_json::from_str(s)
        .map_err(|e| HsmError::InvalidInput(format!("a malformed attribute template: {e}")))
}

/// PKCS#11 template overrides as received (absent: the defaults).
pub fn key_template_from_wire(t: Option<v1::KeyTemplate>) -> Result<KeyTemplate> {
    let t = t.unwrap_or_default();
    Ok(KeyTemplate {
        private: t.private,
        sensitive: t.sensitive,
        sign: t.sign,
        verify: t.verify,
        encrypt: t.encrypt,
        decrypt: t.decrypt,
        wrap: t.wrap,
        unwrap: t.unwrap,
        derive: t.derive,
        wrap_with_trusted: t.wrap_with_trusted,
        copyable: t.copyable,
        public_label: t.public_label,
        public_id: t.public_id,
        unique_label: t.unique_label,
        session_private: t.session_private,
        session_public: t.session_public,
        session_owner: t.session_owner,
        wrap_template: template_from_wire(&t.wrap_template)?,
        unwrap_template: template_from_wire(&t.unwrap_template)?,
    })
}

/// A PED PIN as received.
pub fn ped_pin_from_wire(b: Vec<u8>) -> Result<Pin> {
    Pin::ped_pin(&text(b, "a PED PIN")?)
}

/// A password as received: UTF-8 text of a password's length, or an error that echoes none
/// of it.
pub fn password_from_wire(b: Vec<u8>, what: &str) -> Result<Pin> {
    Pin::password(&text(b, what)?)
}

/// The device description as sent: JSON, the document `ferrohsm hsm show --json` prints, so
/// that it grows without a change to the messages.
pub fn info_to_wire(info: &HsmInfo) -> Result<v1::Text> {
    serde_json::to_string(info)
        .map(|value| v1::Text { value })
        .map_err(|e| HsmError::State(format!("cannot describe the device: {e}")))
}

/// The device description as received.
pub fn info_from_wire(t: v1::Text) -> Result<HsmInfo> {
    serde_json::from_str(&t.value)
        .map_err(|e| HsmError::Store(format!("the server's device description is malformed: {e}")))
}

/// Key options as sent.
pub fn key_options_to_wire(k: &KeyOptions) -> v1::KeyOptions {
    v1::KeyOptions {
        label: k.label.clone(),
        object_id: k.id.clone(),
        extractable: k.extractable,
    }
}

/// Key options as received (absent: no label, no id, not extractable).
pub fn key_options_from_wire(k: Option<v1::KeyOptions>) -> KeyOptions {
    let k = k.unwrap_or_default();
    KeyOptions {
        label: k.label,
        id: k.object_id,
        extractable: k.extractable,
    }
}

fn text(bytes: Vec<u8>, what: &str) -> Result<Zeroizing<String>> {
    // Invalid UTF-8 is refused without echoing the bytes.
    String::from_utf8(bytes).map(Zeroizing::new).map_err(|e| {
        let mut b = e.into_bytes();
        zeroize::Zeroize::zeroize(&mut b);
        HsmError::InvalidInput(format!("{what} must be UTF-8 text"))
    })
}

/// A credential as sent: the secret's bytes go into the request only.
pub fn credential_to_wire(c: &LoginCredential) -> v1::login::Credential {
    match c {
        LoginCredential::Secret(p) => v1::login::Credential::Secret(p.expose().to_vec()),
        LoginCredential::PedKeys { keys, pin } => v1::login::Credential::PedKeys(v1::PedKeys {
            keys: keys
                .iter()
                .map(|(name, bytes)| v1::PedKeyFile {
                    name: name.clone(),
                    contents: bytes.to_vec(),
                })
                .collect(),
            pin: pin.as_ref().map(|p| p.expose().to_vec()),
        }),
    }
}

/// A credential as received, checked for form (the HSM checks the rest).
pub fn credential_from_wire(c: Option<v1::login::Credential>) -> Result<LoginCredential> {
    match c {
        None => Err(HsmError::InvalidInput("a login needs a credential".into())),
        Some(v1::login::Credential::Secret(s)) => Ok(LoginCredential::Secret(password_from_wire(
            s,
            "a password or challenge secret",
        )?)),
        Some(v1::login::Credential::PedKeys(k)) => {
            if k.keys.is_empty() || k.keys.len() > 16 {
                return Err(HsmError::InvalidInput(
                    "present 1 to 16 PED keys (N is at most 16)".into(),
                ));
            }
            let pin = k.pin.map(ped_pin_from_wire).transpose()?;
            Ok(LoginCredential::PedKeys {
                keys: k
                    .keys
                    .into_iter()
                    .map(|f| (f.name, Zeroizing::new(f.contents)))
                    .collect(),
                pin,
            })
        }
    }
}

/// A credential without its role, as sent.
pub fn bare_credential_to_wire(c: &LoginCredential) -> v1::Credential {
    use v1::credential::Kind;
    v1::Credential {
        kind: Some(match credential_to_wire(c) {
            v1::login::Credential::Secret(s) => Kind::Secret(s),
            v1::login::Credential::PedKeys(k) => Kind::PedKeys(k),
        }),
    }
}

/// A credential without its role, as received.
pub fn bare_credential_from_wire(c: Option<v1::Credential>) -> Result<LoginCredential> {
    use v1::credential::Kind;
    credential_from_wire(c.and_then(|c| c.kind).map(|k| match k {
        Kind::Secret(s) => v1::login::Credential::Secret(s),
        Kind::PedKeys(k) => v1::login::Credential::PedKeys(k),
    }))
}

/// A new credential as sent.
pub fn new_credential_to_wire(c: &NewCredential) -> v1::NewCredential {
    use v1::new_credential::Kind;
    v1::NewCredential {
        kind: Some(match c {
            NewCredential::Password(p) => Kind::Password(p.expose().to_vec()),
            NewCredential::Ped(i) => Kind::Ped(ped_imprint_to_wire(i)),
            NewCredential::Staged(id) => Kind::Staged(id.clone()),
        }),
    }
}

/// A PED dialogue's answers as sent.
pub fn ped_imprint_to_wire(i: &PedImprint) -> v1::PedImprint {
    v1::PedImprint {
        keys: i.keys.clone(),
        reuse: i
            .reuse
            .iter()
            .map(|(name, b)| v1::PedKeyFile {
                name: name.clone(),
                contents: b.to_vec(),
            })
            .collect(),
        m: u32::from(i.m),
        n: u32::from(i.n),
        pin: i.pin.as_ref().map(|p| p.expose().to_vec()),
        duplicates: u32::from(i.duplicates),
    }
}

/// A clone step's JSON (hello, batch, progress) as sent.
pub fn clone_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| HsmError::Store(format!("a clone message: {e}")))
}

/// A clone step's JSON as received.
pub fn clone_from_json<T: serde::de::DeserializeOwned>(s: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(s)
        .map_err(|e| HsmError::InvalidInput(format!("the clone's {what} does not decode: {e}")))
}

/// What to clone, as sent.
pub fn clone_select_to_wire(s: &CloneSelect, c: &mut v1::CloneCall) {
    c.labels = s.labels.clone();
    c.ids = s.ids.clone();
    c.classes = s.classes.iter().map(|k| k.name().to_string()).collect();
    c.unique_ids = s.unique_ids.clone();
}

/// What to clone, as received.
pub fn clone_select_from_wire(c: &v1::CloneCall) -> Result<CloneSelect> {
    if c.labels.len() + c.ids.len() + c.classes.len() + c.unique_ids.len() > 10_000 {
        return Err(HsmError::InvalidInput(
            "a clone selects by at most 10000 names".into(),
        ));
    }
    Ok(CloneSelect {
        labels: c.labels.clone(),
        ids: c.ids.clone(),
        classes: c
            .classes
            .iter()
            .map(|k| ObjectClass::from_name(k))
            .collect::<Result<_>>()?,
        unique_ids: c.unique_ids.clone(),
        // The target's choice (its clone_accept), never the source's.
        replace: false,
    })
}

/// A PED secret type as sent: its name in key files.
pub fn secret_type_to_wire(t: SecretType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A PED secret type as received.
pub fn secret_type_from_wire(name: &str) -> Result<SecretType> {
    serde_json::from_value(serde_json::Value::String(name.into()))
        .map_err(|_| HsmError::InvalidInput(format!("unknown PED secret type {name:?}")))
}

fn small(v: u32, what: &str) -> Result<u8> {
    u8::try_from(v).map_err(|_| HsmError::InvalidInput(format!("{what} {v} is out of range")))
}

/// A new credential as received, checked for form (the HSM checks the rest).
pub fn new_credential_from_wire(c: Option<v1::NewCredential>) -> Result<NewCredential> {
    use v1::new_credential::Kind;
    match c.and_then(|c| c.kind) {
        None => Err(HsmError::InvalidInput(
            "a new secret needs a password or PED keys".into(),
        )),
        Some(Kind::Password(p)) => Ok(NewCredential::Password(password_from_wire(
            p,
            "a new password",
        )?)),
        Some(Kind::Ped(i)) => Ok(NewCredential::Ped(ped_imprint_from_wire(i)?)),
        Some(Kind::Staged(id)) => {
            if id.is_empty() || id.len() > 64 {
                return Err(HsmError::InvalidInput(
                    "a stage id is 1 to 64 characters".into(),
                ));
            }
            Ok(NewCredential::Staged(id))
        }
    }
}

/// A PED dialogue's answers as received, checked for form.
pub fn ped_imprint_from_wire(i: v1::PedImprint) -> Result<PedImprint> {
    if i.keys.len() > 16 || i.reuse.len() > 16 {
        return Err(HsmError::InvalidInput(
            "a PED secret has at most 16 keys".into(),
        ));
    }
    Ok(PedImprint {
        keys: i.keys,
        reuse: i
            .reuse
            .into_iter()
            .map(|f| (f.name, Zeroizing::new(f.contents)))
            .collect(),
        m: small(i.m, "M")?,
        n: small(i.n, "N")?,
        pin: i.pin.map(ped_pin_from_wire).transpose()?,
        duplicates: small(i.duplicates, "duplicates")?,
    })
}

/// What imprints made, as sent.
pub fn imprints_to_wire(reports: Vec<ImprintReport>) -> v1::Imprints {
    v1::Imprints {
        imprints: reports.into_iter().map(imprint_to_wire).collect(),
    }
}

/// What one imprint made, as sent.
pub fn imprint_to_wire(r: ImprintReport) -> v1::Imprint {
    v1::Imprint {
        secret_id: r.secret_id,
        origin_serial: r.origin_serial,
        m: u32::from(r.m),
        n: u32::from(r.n),
        pin: r.pin,
        reused: r.reused,
        files: r
            .files
            .into_iter()
            .map(|(name, b)| v1::PedKeyFile {
                name,
                contents: b.to_vec(),
            })
            .collect(),
    }
}

/// What imprints made, as received.
pub fn imprints_from_wire(i: v1::Imprints) -> Result<Vec<ImprintReport>> {
    i.imprints.into_iter().map(imprint_from_wire).collect()
}

/// What one imprint made, as received.
pub fn imprint_from_wire(r: v1::Imprint) -> Result<ImprintReport> {
    Ok(ImprintReport {
        secret_id: r.secret_id,
        origin_serial: r.origin_serial,
        m: small(r.m, "M")?,
        n: small(r.n, "N")?,
        pin: r.pin,
        reused: r.reused,
        files: r
            .files
            .into_iter()
            .map(|f| (f.name, Zeroizing::new(f.contents)))
            .collect(),
    })
}

/// The Auditor's configuration as sent.
pub fn audit_config_to_wire(c: &AuditConfig) -> v1::AuditConfig {
    let (key_use, batch_ms) = match c.key_use {
        KeyUseAudit::Off => ("off", 0),
        KeyUseAudit::Strict => ("strict", 0),
        KeyUseAudit::Batched { max_ms } => ("batched", max_ms),
    };
    v1::AuditConfig {
        key_use: key_use.into(),
        batch_ms,
        ceremony_cosignatures: c.ceremony_cosignatures,
    }
}

/// The Auditor's configuration as received.
pub fn audit_config_from_wire(c: Option<v1::AuditConfig>) -> Result<AuditConfig> {
    let c = c.ok_or_else(|| HsmError::InvalidInput("no audit configuration given".into()))?;
    Ok(AuditConfig {
        key_use: match c.key_use.as_str() {
            "off" => KeyUseAudit::Off,
            "strict" => KeyUseAudit::Strict,
            "batched" => KeyUseAudit::Batched { max_ms: c.batch_ms },
            other => {
                return Err(HsmError::InvalidInput(format!(
                    "key-use auditing is off, strict or batched, not {other:?}"
                )))
            }
        },
        ceremony_cosignatures: c.ceremony_cosignatures,
    })
}

/// Clients as sent.
pub fn clients_to_wire(clients: Vec<ClientInfo>) -> v1::Clients {
    v1::Clients {
        clients: clients
            .into_iter()
            .map(|c| v1::Client {
                name: c.name,
                fingerprint: c.fingerprint,
                partitions: c.partitions,
                registered: c.registered,
                revoked: c.revoked,
            })
            .collect(),
    }
}

/// An issued enrollment code as sent.
pub fn enrollment_to_wire(e: Enrollment) -> v1::Enrollment {
    v1::Enrollment {
        code: e.code,
        name: e.name,
        partitions: e.partitions,
        expires: e.expires,
    }
}

/// An issued enrollment code as received.
pub fn enrollment_from_wire(e: v1::Enrollment) -> Enrollment {
    Enrollment {
        code: e.code,
        name: e.name,
        partitions: e.partitions,
        expires: e.expires,
    }
}

/// Clients as received.
pub fn clients_from_wire(c: v1::Clients) -> Vec<ClientInfo> {
    c.clients
        .into_iter()
        .map(|c| ClientInfo {
            name: c.name,
            fingerprint: c.fingerprint,
            partitions: c.partitions,
            registered: c.registered,
            revoked: c.revoked,
        })
        .collect()
}

/// A witness as sent.
pub fn witness_to_wire(w: Witness) -> v1::Witness {
    v1::Witness {
        name: w.name,
        vkey: w.vkey,
        added: w.added,
    }
}

/// A witness as received.
pub fn witness_from_wire(w: v1::Witness) -> Witness {
    Witness {
        name: w.name,
        vkey: w.vkey,
        added: w.added,
    }
}

/// Audit records in their canonical bytes (the log's leaves).
pub fn records_to_wire(records: &[Record]) -> v1::AuditRecords {
    v1::AuditRecords {
        records: records.iter().map(Record::to_bytes).collect(),
    }
}

/// Audit records as received; a record not in canonical form is an error.
pub fn records_from_wire(r: v1::AuditRecords) -> Result<Vec<Record>> {
    r.records.iter().map(|b| record_from_wire(b)).collect()
}

/// One audit record from its canonical bytes.
pub fn record_from_wire(b: &[u8]) -> Result<Record> {
    Record::from_bytes(b).map_err(|e| HsmError::Store(format!("audit record from the server: {e}")))
}

/// A verification report as sent.
pub fn report_to_wire(r: &Report) -> v1::AuditReport {
    v1::AuditReport {
        origin: r.origin.clone(),
        size: r.size,
        root: r.root.clone(),
        from: r.from,
        records: r.records,
        key_pinned: r.key_pinned,
        extends: r.extends.clone(),
        cosigned_by: r.cosigned_by.clone(),
        ceremonies: r
            .ceremonies
            .iter()
            .map(|(seq, event)| v1::Ceremony {
                seq: *seq,
                event: event.clone(),
            })
            .collect(),
        proved: r.proved,
    }
}

/// A verification report as received.
pub fn report_from_wire(r: v1::AuditReport) -> Report {
    Report {
        origin: r.origin,
        size: r.size,
        root: r.root,
        from: r.from,
        records: r.records,
        key_pinned: r.key_pinned,
        extends: r.extends,
        cosigned_by: r.cosigned_by,
        ceremonies: r.ceremonies.into_iter().map(|c| (c.seq, c.event)).collect(),
        proved: r.proved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GlobalPlatform master key's marker crosses the wire whole; a malformed one is an
    /// error, never a key without its marker (which would lose the rules that go with it).
    #[test]
    fn a_gp_marker_crosses_the_wire_or_is_refused() {
        let marker = r#"{"set":"issuer","version":3,"role":"mac","key_type":"aes-128","population":"cards","retired":false}"#;
        let wire = |gp: &str| v1::ObjectInfo {
            handle: 7,
            attributes: Some(v1::Attributes {
                class: ObjectClass::SecretKey.name().into(),
                key_type: Some("aes-128".into()),
                gp: gp.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let o = object_from_wire(wire(marker)).unwrap();
        let g = o.attrs.gp.clone().unwrap();
        assert_eq!(
            (g.set.as_str(), g.version, g.role.as_str()),
            ("issuer", 3, "mac")
        );
        let back = object_to_wire(&o);
        assert_eq!(object_from_wire(back).unwrap().attrs.gp, Some(g));
        assert!(object_from_wire(wire("")).unwrap().attrs.gp.is_none());
        let e = object_from_wire(wire("{not json")).unwrap_err();
        assert!(e.to_string().contains("GlobalPlatform"), "{e}");
    }
}
