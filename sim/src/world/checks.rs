//! The end of a run: heal, wait for convergence, and the final checks
//! (replicas agree, audit chains are identical, nothing acknowledged was
//! lost, every answer stayed inside a committed split).

use super::*;

impl World {
    /// Heals every fault and waits until every member and its router hold
    /// the newest committed generation.
    pub(super) async fn settle(&mut self) {
        for node in &self.nodes {
            node.crash_armed.store(false, Ordering::SeqCst);
        }
        self.reap_stopped().await;
        self.net.heal();
        self.held.clear();
        self.net.set_faults(LinkFaults::CALM);
        for index in 0..self.nodes.len() {
            self.nodes[index].disk.set_speed(DiskSpeed::FAST);
            self.nodes[index].skew = chrono::Duration::zero();
            if self.nodes[index].handle.is_none() {
                self.restart(index).await;
            }
        }
        self.trace("HEAL everything");
        // A write after healing makes a new leader commit everything before it.
        self.place().await;
        let started = tokio::time::Instant::now();
        loop {
            self.sync_membership();
            if let Some(generation) = self.converged() {
                let after = started.elapsed();
                self.stats.converged_after = Some(after);
                self.trace(format!(
                    "converged on generation {generation} after {:.3}s",
                    after.as_secs_f64()
                ));
                return;
            }
            if started.elapsed() > self.config.settle_bound {
                let detail = self.divergence();
                self.ledger().violate(
                    names::CONVERGE_AFTER_HEAL,
                    format!(
                        "not converged {:?} after healing: {detail}",
                        self.config.settle_bound
                    ),
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Takes voters and learners from the committed membership as the most
    /// advanced running node applied it: a membership change whose client
    /// timed out may still have committed.
    pub(super) fn sync_membership(&mut self) {
        let newest = self
            .nodes
            .iter()
            .filter_map(|node| node.handle.as_ref().map(|h| h.raft()))
            .map(|raft| {
                let metrics = raft.metrics().borrow_watched().clone();
                (
                    metrics.last_applied.map_or(0, |id| id.index()),
                    metrics.membership_config,
                )
            })
            .max_by_key(|(applied, _)| *applied);
        let Some((_, membership)) = newest else {
            return;
        };
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        for node in &mut self.nodes {
            node.voter = voters.contains(&node.id);
            node.member = nodes.contains(&node.id);
        }
    }

    pub(super) fn members(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.member)
            .map(|n| n.id)
            .collect()
    }

    /// The generation of the main environment that every member and its
    /// router agree on, if every member holds the newest committed state
    /// of every environment and routes by the main one's.
    pub(super) fn converged(&self) -> Option<u64> {
        // Every member has applied the whole committed log, not only the
        // same generation: a refused command adds an audit line without a
        // new generation, and the chains are compared afterwards.
        let applied: Vec<u64> = self
            .members()
            .iter()
            .map(|id| {
                self.nodes
                    .iter()
                    .find(|node| node.id == *id)
                    .and_then(|node| node.handle.as_ref())
                    .map(|handle| {
                        handle
                            .raft()
                            .metrics()
                            .borrow_watched()
                            .last_applied
                            .map_or(0, |log_id| log_id.index())
                    })
            })
            .collect::<Option<Vec<u64>>>()?;
        if applied.windows(2).any(|pair| pair[0] != pair[1]) {
            return None;
        }
        let ledger = self.ledger();
        let mut newest: BTreeMap<&EnvId, u64> = BTreeMap::new();
        for (env, generation) in ledger.committed.keys() {
            let entry = newest.entry(env).or_insert(*generation);
            *entry = (*entry).max(*generation);
        }
        for id in self.members() {
            let applied = ledger.applied.get(&id)?;
            for (env, generation) in &newest {
                if applied.get(*env).map(|state| state.generation) != Some(*generation) {
                    return None;
                }
            }
            let routed = ledger.tables.get(&id)?.get(&self.env)?.0.generation();
            if Some(&routed) != newest.get(&self.env) {
                return None;
            }
        }
        newest.get(&self.env).copied()
    }

    pub(super) fn divergence(&self) -> String {
        let ledger = self.ledger();
        self.members()
            .iter()
            .map(|id| {
                let applied = ledger
                    .applied
                    .get(id)
                    .and_then(|s| s.get(&self.env))
                    .map(|s| s.generation);
                let routed = ledger
                    .tables
                    .get(id)
                    .and_then(|t| t.get(&self.env))
                    .map(|(t, _)| t.generation());
                format!("n{id}: applied {applied:?}, router {routed:?}")
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Acknowledged commands, audit chains and served answers, checked on
    /// the healed cluster.
    pub(super) fn final_checks(&mut self) {
        let acks = self.ledger().acks.clone();
        let mut chains: Vec<(NodeId, BTreeMap<EnvId, Vec<String>>)> = Vec::new();
        for node in self.nodes.iter().filter(|n| n.member) {
            let Some(handle) = &node.handle else {
                continue;
            };
            let audit = audit_chains(handle);
            let mut ledger = self.ledger();
            for ack in &acks {
                let lines = audit.get(&ack.env).map_or(&[][..], Vec::as_slice);
                let found = lines.iter().any(|line| {
                    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|event| {
                        event["idempotency_key"] == ack.key.as_str()
                            && event["new_generation"].as_u64() == Some(ack.generation)
                            && event["replayed"] != true
                    })
                });
                if !found {
                    ledger.violate(
                        names::ACKED_NEVER_LOST,
                        format!(
                            "n{} lacks {} in {} (acknowledged at #{} generation {})",
                            node.id, ack.key, ack.env, ack.index, ack.generation
                        ),
                    );
                }
            }
            for (env, lines) in &audit {
                if let Err(error) = deploy::audit::verify_chain(lines.iter().map(String::as_str)) {
                    ledger.violate(
                        names::AUDIT_CHAIN_VERIFIES,
                        format!("n{} {env}: {error}", node.id),
                    );
                }
            }
            drop(ledger);
            chains.push((node.id, audit));
        }
        if let Some((first, reference)) = chains.first() {
            for (id, audit) in chains.iter().skip(1) {
                if audit != reference {
                    let sizes = |a: &BTreeMap<EnvId, Vec<String>>| {
                        a.iter()
                            .map(|(env, lines)| format!("{env}: {}", lines.len()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    self.ledger().violate(
                        names::AUDIT_CHAIN_VERIFIES,
                        format!(
                            "n{id}'s audit chains ({}) differ from n{first}'s ({})",
                            sizes(audit),
                            sizes(reference)
                        ),
                    );
                }
            }
        }
        self.ledger().check_served();
    }
}

/// Every environment's audit lines in a member's replica.
fn audit_chains(handle: &ClusterHandle) -> BTreeMap<EnvId, Vec<String>> {
    let store = handle.state_machine().store();
    let mut chains = BTreeMap::new();
    for env in store.list().unwrap_or_default() {
        chains.insert(env.clone(), store.audit_lines(&env).unwrap_or_default());
    }
    chains
}
