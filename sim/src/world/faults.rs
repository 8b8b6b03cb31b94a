//! Faults: the [`Fault`] vocabulary applied to nodes, links and disks,
//! the random fault mix of a step, joins and leaves, and the rejoin watch
//! of issue #12's invariants.

use super::*;

impl World {
    /// The term and committed index of a live leader, when the network is
    /// calm and whole and every disk fast, the leader heard from a quorum
    /// within an election timeout, and every other running member follows
    /// it: a restart now must rejoin within the bound without moving the
    /// term. A leader that stayed leader alone behind a partition that just
    /// healed is not live (its lease ran out; a member back from the
    /// partition may rightly start an election).
    pub(super) fn calm_with_a_leader(&self) -> Option<(u64, u64)> {
        if self.net.faults() != LinkFaults::CALM
            || self.net.is_partitioned()
            || self.nodes.iter().any(|n| n.disk.speed() != DiskSpeed::FAST)
            || self
                .nodes
                .iter()
                .any(|n| n.crash_armed.load(Ordering::SeqCst))
        {
            return None;
        }
        let leader_index = self.leader()?;
        let leader = self.raft(leader_index)?;
        let metrics = leader.metrics().borrow_watched().clone();
        let fresh =
            Duration::from_millis(consensus::RaftSettings::default().election_timeout_min_ms);
        let heard_from_a_quorum = metrics
            .last_quorum_acked
            .as_ref()
            .is_some_and(|at| openraft::Instant::elapsed(&**at) < fresh);
        let followed = self
            .up()
            .into_iter()
            .filter(|i| *i != leader_index && self.nodes[*i].member)
            .all(|i| {
                self.raft(i).is_some_and(|raft| {
                    raft.metrics().borrow_watched().current_leader == Some(metrics.id)
                })
            });
        if !heard_from_a_quorum || !followed {
            return None;
        }
        let committed = metrics.cluster_committed.map(|id| id.index())?;
        Some((metrics.current_term, committed))
    }

    /// Starts watching the member restarted at `index` (see [`Rejoin`]).
    pub(super) fn watch_rejoin(&mut self, index: usize, term: u64, target: u64) {
        let Some(raft) = self.raft(index).cloned() else {
            return;
        };
        if !self.nodes[index].member {
            return;
        }
        let at = tokio::time::Instant::now();
        let caught_up = Arc::new(Mutex::new(None));
        let done = Arc::clone(&caught_up);
        tokio::spawn(async move {
            let applied = raft
                .wait(Some(REJOIN_BOUND * 4))
                .applied_index_at_least(Some(target), "a rejoin")
                .await;
            if applied.is_ok() {
                *done
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(at.elapsed());
            }
        });
        self.rejoin = Some(Rejoin {
            id: self.nodes[index].id,
            at,
            term,
            target,
            caught_up,
        });
    }

    /// Checks the watched restart: applied within [`REJOIN_BOUND`], and no
    /// term moved; done after [`REJOIN_TERM_WATCH`].
    pub(super) fn check_rejoin(&mut self) {
        let Some(rejoin) = &self.rejoin else {
            return;
        };
        let elapsed = rejoin.at.elapsed();
        let caught_up = *rejoin
            .caught_up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let highest_term = self
            .nodes
            .iter()
            .filter_map(|n| n.handle.as_ref().map(|h| h.raft()))
            .map(|raft| raft.metrics().borrow_watched().current_term)
            .max()
            .unwrap_or(0);
        let (id, term, target) = (rejoin.id, rejoin.term, rejoin.target);
        if highest_term != term {
            self.rejoin = None;
            self.ledger().violate(
                names::RETURN_MOVES_NO_TERM,
                format!(
                    "n{id} returned to a calm cluster with a live leader in term {term}; the term moved to {highest_term} {:.3}s later",
                    elapsed.as_secs_f64()
                ),
            );
            return;
        }
        match caught_up {
            Some(took) if took > REJOIN_BOUND => {
                self.rejoin = None;
                self.ledger().violate(
                    names::REJOIN_WITHIN_BOUND,
                    format!("n{id} applied index {target} only {took:?} after its restart"),
                );
            }
            None if elapsed > REJOIN_BOUND => {
                self.rejoin = None;
                self.ledger().violate(
                    names::REJOIN_WITHIN_BOUND,
                    format!("n{id} had not applied index {target} {elapsed:?} after its restart"),
                );
            }
            Some(took) if elapsed > REJOIN_TERM_WATCH => {
                self.rejoin = None;
                self.stats.rejoins_checked += 1;
                self.stats.slowest_rejoin = self.stats.slowest_rejoin.max(Some(took));
                self.trace(format!("n{id} rejoined after {:.3}s", took.as_secs_f64()));
            }
            _ => {}
        }
    }

    /// One fault, or the repair of one, drawn from the run's mix.
    pub(super) async fn fault(&mut self) {
        // Any new fault ends the calm the watched restart was judged in.
        self.rejoin = None;
        let voters_down = self
            .nodes
            .iter()
            .filter(|n| n.voter && n.handle.is_none())
            .count();
        let voters = self.nodes.iter().filter(|n| n.voter).count();
        let minority = (voters - 1) / 2;
        let draw = match self.config.fault_mix {
            FaultMix::All => self.rng.random_range(0..100),
            FaultMix::CrashRestart => self.rng.random_range(0..26),
            FaultMix::LeaderBounce => return self.leader_bounce().await,
        };
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let id_of = |world: &Self, index: usize| world.nodes[index].id;
        let fault = match draw {
            0..14 if voters_down < minority => {
                let Some(index) = self.pick_node(|n| n.handle.is_some()) else {
                    return;
                };
                let node = id_of(self, index);
                if self.config.fault_mix == FaultMix::All && self.rng.random_bool(0.3) {
                    Fault::CrashAfterCommit { node }
                } else {
                    Fault::Crash {
                        node,
                        disk: self.disk_fault(index),
                    }
                }
            }
            0..26 => {
                let Some(index) = self.pick_node(|n| n.handle.is_none()) else {
                    return;
                };
                Fault::Restart {
                    node: id_of(self, index),
                }
            }
            26..36 => {
                let Some(index) = self.pick_node(|n| n.member) else {
                    return;
                };
                Fault::Isolate {
                    node: id_of(self, index),
                    from: ids,
                }
            }
            36..44 => {
                let Some(index) = self.leader() else {
                    return;
                };
                Fault::Isolate {
                    node: id_of(self, index),
                    from: ids,
                }
            }
            44..50 => {
                let from = self.pick_node(|n| n.member);
                let to = self.pick_node(|n| n.member);
                let (Some(from), Some(to)) = (from, to) else {
                    return;
                };
                if from == to {
                    return;
                }
                let (from, to) = (id_of(self, from), id_of(self, to));
                if self.rng.random_bool(0.5) {
                    Fault::Partition { from, to }
                } else {
                    Fault::Hold { from, to }
                }
            }
            50..64 => match self.held.iter().next().copied() {
                Some((from, to)) if self.rng.random_bool(0.5) => Fault::Release { from, to },
                _ => Fault::Heal,
            },
            64..72 => Fault::Noise(LinkFaults {
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(self.rng.random_range(5..80)),
                loss: self.rng.random_range(0.0..0.2),
                duplicate: self.rng.random_range(0.0..0.1),
            }),
            72..78 => Fault::Calm,
            78..84 => {
                let Some(index) = self.pick_node(|_| true) else {
                    return;
                };
                Fault::ClockSkew {
                    node: id_of(self, index),
                    skew: chrono::Duration::milliseconds(self.rng.random_range(-5_000..5_000)),
                }
            }
            84..90 => {
                let Some(index) = self.pick_node(|_| true) else {
                    return;
                };
                let slow = self.rng.random_bool(0.5);
                Fault::DiskSpeed {
                    node: id_of(self, index),
                    speed: if slow {
                        DiskSpeed::SLOW
                    } else {
                        DiskSpeed::FAST
                    },
                }
            }
            90..95 => return self.join().await,
            _ => return self.leave().await,
        };
        self.inject(fault).await;
    }

    /// One fault of the leader-bounce mix: the leader's disk slowed or
    /// sped up, or a write and then the leader killed (its unflushed
    /// writes lost or torn) and started again in the same instant.
    async fn leader_bounce(&mut self) {
        let Some(leader) = self.leader() else {
            if let Some(index) = self.pick_node(|n| n.handle.is_none()) {
                let node = self.nodes[index].id;
                self.inject(Fault::Restart { node }).await;
            }
            return;
        };
        let node = self.nodes[leader].id;
        match self.rng.random_range(0..3) {
            0 => {
                self.inject(Fault::DiskSpeed {
                    node,
                    speed: DiskSpeed::SLOW,
                })
                .await;
            }
            1 => {
                // A write first, so a slow disk may still hold some of it
                // when the process dies; then the bounce, in the same
                // instant.
                self.operate().await;
                let Some(leader) = self.leader() else {
                    return;
                };
                let node = self.nodes[leader].id;
                let disk = self.disk_fault(leader);
                self.inject(Fault::Crash { node, disk }).await;
                self.inject(Fault::Restart { node }).await;
            }
            _ => {
                self.inject(Fault::DiskSpeed {
                    node,
                    speed: DiskSpeed::FAST,
                })
                .await;
            }
        }
    }

    /// What a crash of node `index` does to its unflushed writes.
    pub(super) fn disk_fault(&mut self, index: usize) -> DiskFault {
        let unflushed = self.nodes[index].disk.unflushed();
        if unflushed > 0 && self.rng.random_bool(0.5) {
            DiskFault::TornWrite {
                kept: self.rng.random_range(0..unflushed),
            }
        } else {
            DiskFault::LostWrites
        }
    }

    pub(super) fn index_of(&self, node: NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == node)
    }

    /// Injects one fault (or repairs one) and records it in the trace.
    pub(crate) async fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::Crash { node, disk } => {
                if let Some(index) = self.index_of(node) {
                    self.crash(index, disk).await;
                }
            }
            Fault::CrashAfterCommit { node } => {
                if let Some(index) = self.index_of(node) {
                    self.nodes[index].crash_armed.store(true, Ordering::SeqCst);
                    self.trace(format!(
                        "FAULT n{node} dies after its next commit, before the bookkeeping"
                    ));
                }
            }
            Fault::Restart { node } => {
                if let Some(index) = self.index_of(node) {
                    self.trace(format!("FAULT restart n{node}"));
                    let watch = self.calm_with_a_leader();
                    self.restart(index).await;
                    if let Some((term, target)) = watch {
                        self.watch_rejoin(index, term, target);
                    }
                }
            }
            Fault::Isolate { node, from } => {
                self.net.isolate(node, &from);
                self.stats.partitions += 1;
                self.trace(format!("FAULT isolate n{node}"));
            }
            Fault::Partition { from, to } => {
                self.net.block(from, to);
                self.stats.partitions += 1;
                self.trace(format!("FAULT one-way partition n{from} -> n{to}"));
            }
            Fault::Repair { from, to } => {
                self.net.repair(from, to);
                self.trace(format!("HEAL link n{from} -> n{to}"));
            }
            Fault::Hold { from, to } => {
                self.net.hold(from, to);
                self.held.insert((from, to));
                self.stats.partitions += 1;
                self.trace(format!("FAULT hold messages n{from} -> n{to}"));
            }
            Fault::Release { from, to } => {
                self.net.release(from, to);
                self.held.remove(&(from, to));
                self.trace(format!("HEAL release messages n{from} -> n{to}"));
            }
            Fault::Heal => {
                self.net.heal();
                self.held.clear();
                self.trace("HEAL partitions");
            }
            Fault::Noise(faults) => {
                self.net.set_faults(faults);
                self.trace(format!("FAULT noisy network {faults:?}"));
            }
            Fault::Calm => {
                self.net.set_faults(LinkFaults::CALM);
                self.trace("HEAL calm network");
            }
            Fault::ClockSkew { node, skew } => {
                if let Some(index) = self.index_of(node) {
                    self.nodes[index].skew = skew;
                    self.trace(format!("FAULT clock skew n{node} {skew}"));
                }
            }
            Fault::DiskSpeed { node, speed } => {
                if let Some(index) = self.index_of(node) {
                    self.nodes[index].disk.set_speed(speed);
                    let word = if speed == DiskSpeed::SLOW {
                        "slow"
                    } else {
                        "fast"
                    };
                    self.trace(format!("FAULT disk of n{node} {word}"));
                }
            }
        }
    }

    /// A running node outside the cluster joins: learner, then voter.
    pub(super) async fn join(&mut self) {
        let Some(index) = self.pick_node(|n| !n.member && n.handle.is_some()) else {
            return;
        };
        let Some(leader) = self.leader() else {
            return;
        };
        let Some(raft) = self.raft(leader).cloned() else {
            return;
        };
        let id = self.nodes[index].id;
        let added = tokio::time::timeout(
            Duration::from_secs(10),
            raft.add_learner(id, Self::cluster_node(id), true),
        )
        .await;
        if !matches!(added, Ok(Ok(_))) {
            self.trace(format!("join of n{id} failed at the learner step"));
            return;
        }
        self.nodes[index].member = true;
        let voter = Self::change(&raft, ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await;
        self.nodes[index].voter = voter;
        self.stats.joins += 1;
        self.trace(format!("MEMBERSHIP n{id} joined (voter: {voter})"));
    }

    /// One membership change through the leader; true when it committed in
    /// time (a change that timed out may still commit: `sync_membership`).
    pub(super) async fn change(
        raft: &consensus::Raft,
        change: ChangeMembers<NodeId, ClusterNode>,
    ) -> bool {
        let changed = tokio::time::timeout(
            Duration::from_secs(10),
            raft.change_membership(change, false),
        )
        .await;
        matches!(changed, Ok(Ok(_)))
    }

    /// A voter leaves, when more than three remain.
    pub(super) async fn leave(&mut self) {
        let voters = self.nodes.iter().filter(|n| n.voter).count();
        if voters <= 3 {
            return;
        }
        let Some(leader) = self.leader() else {
            return;
        };
        let leader_id = self.nodes[leader].id;
        let Some(index) = self.pick_node(|n| n.voter && n.id != leader_id) else {
            return;
        };
        let Some(raft) = self.raft(leader).cloned() else {
            return;
        };
        let id = self.nodes[index].id;
        if !Self::change(&raft, ChangeMembers::RemoveVoters(BTreeSet::from([id]))).await {
            self.trace(format!("leave of n{id} failed"));
            return;
        }
        self.nodes[index].voter = false;
        if Self::change(&raft, ChangeMembers::RemoveNodes(BTreeSet::from([id]))).await {
            self.nodes[index].member = false;
        }
        self.stats.leaves += 1;
        self.trace(format!("MEMBERSHIP n{id} left"));
    }
}
