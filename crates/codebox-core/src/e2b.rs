//! Lookups for the E2B gateway (`codebox-e2b`). Requests addressed to a
//! sandbox (E2B's envd and code-interpreter ports) authenticate with a
//! per-sandbox token instead of a user's credentials, so the gateway needs the
//! owner of a live sandbox from its id alone, after it checked that token.

use codebox_store::{SandboxRecord, User};
use codebox_types::SandboxId;

use crate::error::CoreError;
use crate::Core;

impl Core {
    /// A live sandbox and its owner. Unknown or malformed ids are `NotFound`;
    /// an ended (or just expired) sandbox is `Gone`. Call it only for a request
    /// that already proved knowledge of the sandbox's token: the answer says
    /// whether the id exists.
    pub async fn live_sandbox_owner(&self, id: &str) -> Result<(SandboxRecord, User), CoreError> {
        let parsed: SandboxId = id.parse().map_err(|_| CoreError::NotFound)?;
        let record = self
            .store
            .get_sandbox(&parsed)
            .await?
            .ok_or(CoreError::NotFound)?;
        let owner = self
            .store
            .get_user(&record.user_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        // The same liveness and expiry rules as the owner's own requests.
        let record = self.get_sandbox(&owner, id).await?;
        Ok((record, owner))
    }
}
