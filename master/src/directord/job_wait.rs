//! JOB_WAIT (Directord's coordination notices) across minions: a minion's engine asks the
//! master (frame `ask`), which asks each listed identity's agent for its cache state of the
//! job (`Op::JobState`, polled there until it ended or the JOB_WAIT's `--timeout` passed) and
//! answers which acked and which failed, and why. A listed minion that is away is waited for
//! until that timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use minion::wire::{Ask, EndedState, JobStateAnswer, JobWaitAnswer, Op, Reply, WireError};

use crate::fleet::RemoteMinion;
use crate::server::Hub;

/// Answers a minion's `ask` (see [`Ask`]).
pub async fn answer(hub: &Arc<Hub>, asker: &str, ask: Ask) -> Reply {
    match ask {
        Ask::JobWait {
            sha3_224,
            identities,
            limit_secs,
        } => {
            tracing::info!(minion = %asker, job = %sha3_224, ?identities, "JOB_WAIT");
            job_wait(hub, &sha3_224, identities, limit_secs).await
        }
    }
}

/// JOB_WAIT: asks each identity's agent whether job `sha` ended there (waiting up to
/// `limit_secs`); a [`JobWaitAnswer`].
async fn job_wait(
    hub: &Arc<Hub>,
    sha: &str,
    mut identities: Vec<String>,
    limit_secs: u64,
) -> Reply {
    if !minion::agent::inbox::valid_sha(sha) {
        return Reply::Err(WireError::Unreachable {
            message: format!(
                "{sha:?} is not a job fingerprint (56 lower-case hex digits: see JOB_SHA3_224 in `ingot manage --job-info ID`)"
            ),
        });
    }
    identities.sort();
    identities.dedup();
    let asks = identities.iter().map(|id| async move {
        let limit = Duration::from_secs(limit_secs);
        let asked = Instant::now();
        let state = || hub.nodes().into_iter().find(|n| n.name == *id).map(|n| n.state);
        if hub.connected_session(id).is_none() {
            match state().as_deref() {
                None => return Err(format!("{id} is not a minion of this master (no certificate was issued to that name; see `ingot manage --list-nodes`)")),
                Some("revoked") => return Err(format!("{id}'s certificate is revoked, so it cannot connect to answer: issue it a new one (`ingot certs issue {id}`) or leave it out of --identity")),
                Some(_) => {}
            }
        }
        // A minion that is away (rebooting, restarting) may come back within the limit.
        let s = loop {
            if let Some(s) = hub.connected_session(id) {
                break s;
            }
            if asked.elapsed() >= limit {
                let state = state().unwrap_or_else(|| "forgotten".to_owned());
                return Err(format!("{id} is not connected to the master ({state}) and did not connect within {limit_secs}s (JOB_WAIT's --timeout; see `ingot manage --list-nodes`)"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let op = Op::JobState {
            sha3_224: sha.to_owned(),
            limit_secs: limit_secs.saturating_sub(asked.elapsed().as_secs()),
        };
        // The agent keeps to the limit; this bounds one that never answers.
        let bound = Duration::from_secs(limit_secs.saturating_add(30));
        let link = RemoteMinion::new(hub.clone(), s);
        match tokio::time::timeout(bound, link.call_op(op)).await {
            Err(_) => Err(format!("{id} did not answer within {}s", bound.as_secs())),
            Ok(Err(e)) => Err(format!("asking {id}: {e}")),
            Ok(Ok(v)) => match serde_json::from_value::<JobStateAnswer>(v) {
                Ok(JobStateAnswer {
                    state: Some(EndedState::Success),
                }) => Ok(()),
                Ok(JobStateAnswer {
                    state: Some(EndedState::Failed),
                }) => Err(format!("job {sha} failed on {id}")),
                Ok(JobStateAnswer { state: None }) => Err(format!(
                    "job {sha} did not end on {id} within {limit_secs}s (JOB_WAIT's --timeout)"
                )),
                Err(e) => Err(format!("{id} answered something that is not a job state: {e}")),
            },
        }
    });
    let answers = futures::future::join_all(asks).await;
    let mut answer = JobWaitAnswer::default();
    for (id, a) in identities.into_iter().zip(answers) {
        match a {
            Ok(()) => answer.acked.push(id),
            Err(why) => {
                answer.failed.insert(id, why);
            }
        }
    }
    Reply::Ok(serde_json::to_value(answer).expect("answers serialize"))
}
