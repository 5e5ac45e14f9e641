//! [`StoredBackup`]: what key rotation and copies need of any backup's manifest.

use super::base::{BaseManifest, base_data_prefix, base_manifest_key};
use super::{EncryptionInfo, Manifest, StoredObject, data_prefix, manifest_key};

/// A complete backup as a whole, whichever kind (a dump's `Manifest`, a `BaseManifest`):
/// where its manifest is, its recipients, the objects whose digests it records (the large
/// one first) and the prefix they and its verify records live under. Key rotation and
/// copies work through it.
pub trait StoredBackup: Clone + Send + Sync {
    fn kind(&self) -> &'static str;
    /// The database, or `cluster <system identifier>`.
    fn owner(&self) -> String;
    fn id(&self) -> String;
    fn manifest_key(&self) -> String;
    fn prefix(&self) -> String;
    fn encryption(&self) -> &EncryptionInfo;
    fn encryption_mut(&mut self) -> &mut EncryptionInfo;
    fn objects(&self) -> Vec<&StoredObject>;
    fn objects_mut(&mut self) -> Vec<&mut StoredObject>;
    fn to_json(&self) -> Vec<u8>;
}

impl StoredBackup for Manifest {
    fn kind(&self) -> &'static str {
        "logical"
    }
    fn owner(&self) -> String {
        self.database.clone()
    }
    fn id(&self) -> String {
        self.id.to_string()
    }
    fn manifest_key(&self) -> String {
        manifest_key(&self.database, &self.id)
    }
    fn prefix(&self) -> String {
        data_prefix(&self.database, &self.id)
    }
    fn encryption(&self) -> &EncryptionInfo {
        &self.encryption
    }
    fn encryption_mut(&mut self) -> &mut EncryptionInfo {
        &mut self.encryption
    }
    fn objects(&self) -> Vec<&StoredObject> {
        vec![&self.dump.stored, &self.facts, &self.globals]
    }
    fn objects_mut(&mut self) -> Vec<&mut StoredObject> {
        vec![&mut self.dump.stored, &mut self.facts, &mut self.globals]
    }
    fn to_json(&self) -> Vec<u8> {
        Manifest::to_json(self)
    }
}

impl StoredBackup for BaseManifest {
    fn kind(&self) -> &'static str {
        "base"
    }
    fn owner(&self) -> String {
        crate::catalog::base::cluster_group(self.system_identifier)
    }
    fn id(&self) -> String {
        self.id.to_string()
    }
    fn manifest_key(&self) -> String {
        base_manifest_key(self.system_identifier, &self.id)
    }
    fn prefix(&self) -> String {
        base_data_prefix(self.system_identifier, &self.id)
    }
    fn encryption(&self) -> &EncryptionInfo {
        &self.encryption
    }
    fn encryption_mut(&mut self) -> &mut EncryptionInfo {
        &mut self.encryption
    }
    fn objects(&self) -> Vec<&StoredObject> {
        vec![&self.data.stored]
    }
    fn objects_mut(&mut self) -> Vec<&mut StoredObject> {
        vec![&mut self.data.stored]
    }
    fn to_json(&self) -> Vec<u8> {
        BaseManifest::to_json(self)
    }
}
