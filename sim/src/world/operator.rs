//! The operator and the clients: commands written through a member's
//! `ClusterHandle::write` (with the client's retries), the environment's
//! setup, the lifecycle steps and the leader's placement.

use super::*;

impl World {
    pub(super) fn next_ids(&mut self) -> MintedIds {
        self.ids += 1;
        MintedIds {
            event_id: EventId::from_ulid(ulid::Ulid::from_parts(self.ids, self.rng.random())),
            object_id: ulid::Ulid::from_parts(self.ids, self.rng.random()),
        }
    }

    pub(super) fn envelope(
        &mut self,
        command: Command,
        key: String,
        node: usize,
        actor: Actor,
    ) -> CommandEnvelope {
        let elapsed = chrono::Duration::from_std(self.ledger().trace.elapsed())
            .unwrap_or_else(|_| chrono::Duration::zero());
        CommandEnvelope {
            at: self.epoch + elapsed + self.nodes[node].skew,
            actor,
            authorization: Authorization {
                decision: Decision::Allow,
                policy: "sim".to_owned(),
                reason: "simulated operator".to_owned(),
            },
            minted: self.next_ids(),
            command,
            precondition: None,
            idempotency_key: Some(key),
            signed_by: None,
        }
    }

    /// Sends a command like a client would: to a random running member,
    /// whose cluster handle forwards it to the leader and retries while
    /// leadership moves; a client that gets no answer in time retries the
    /// same envelope (same event id, same idempotency key) through another
    /// member. `Some` when the cluster answered.
    pub(super) async fn submit(&mut self, command: Command, what: &str) -> Option<Answer> {
        let operator = Actor::local_user(Some("sim-operator".to_owned()), Some(1000));
        self.submit_as(command, what, operator).await
    }

    /// [`Self::submit`] under another actor (the rollout controller's).
    pub(super) async fn submit_as(
        &mut self,
        command: Command,
        what: &str,
        actor: Actor,
    ) -> Option<Answer> {
        let &first = self.entry_points().choose(&mut self.rng)?;
        self.ids += 1;
        let key = format!("sim-{}-{}", self.config.seed, self.ids);
        let envelope = self.envelope(command, key.clone(), first, actor);
        let json = serde_json::to_string(&envelope).ok()?;
        let env = envelope.command.env_id();
        if self.config.bug == Some(PlantedBug::RouterUsesUncommittedState) {
            self.speculate(first, &envelope);
        }
        let mut target = first;
        for attempt in 0..WRITE_ATTEMPTS {
            let Some(handle) = self.nodes[target].handle.clone() else {
                target = *self.entry_points().choose(&mut self.rng)?;
                continue;
            };
            let request = ClusterRequest::Submit {
                envelope_json: json.clone(),
            };
            // The node's own write path: propose if it leads, else forward
            // to the leader and retry while leadership moves; a retry of
            // the same envelope must be answered, not applied twice.
            match tokio::time::timeout(WRITE_TIMEOUT, handle.write(request)).await {
                Ok(Ok(ClusterResponse::Outcome { outcome_json })) => {
                    let outcome: Outcome = serde_json::from_str(&outcome_json).ok()?;
                    let answer = Answer::of(&outcome);
                    let index = handle.state_machine().applied_index().unwrap_or(0);
                    if answer.ok {
                        self.stats.acked += 1;
                        let generation = answer.generation.unwrap_or(0);
                        self.trace(format!(
                            "ACK {what} {key} via n{} applied #{index} gen={generation}{}",
                            self.nodes[target].id,
                            if answer.replayed { " (replayed)" } else { "" }
                        ));
                        // A command that changed nothing (an unchanged
                        // placement) writes no audit event and no
                        // generation: there is nothing of it to lose.
                        if answer.event_id.is_some() {
                            self.ledger().acks.push(Ack {
                                key,
                                env,
                                generation,
                                index,
                            });
                        }
                    } else {
                        self.stats.refused += 1;
                        self.trace(format!(
                            "REFUSED {what} {key}: {}",
                            answer.error.clone().unwrap_or_default()
                        ));
                    }
                    return Some(answer);
                }
                Ok(Ok(ClusterResponse::Failed { message })) => {
                    self.trace(format!("{what} {key} attempt {attempt} failed: {message}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    target = *self.entry_points().choose(&mut self.rng)?;
                }
                Ok(Err(error)) => {
                    self.trace(format!("{what} {key} attempt {attempt}: {error}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    target = *self.entry_points().choose(&mut self.rng)?;
                }
                Err(_) => {
                    self.trace(format!("{what} {key} attempt {attempt} timed out"));
                    target = *self.entry_points().choose(&mut self.rng)?;
                }
            }
        }
        self.stats.unacknowledged += 1;
        self.trace(format!("GAVE UP {what} {key}"));
        None
    }

    /// The planted bug: the receiving node's router takes the state the
    /// write should produce from its own replica, before it is committed.
    pub(super) fn speculate(&mut self, node: usize, envelope: &CommandEnvelope) {
        let id = self.nodes[node].id;
        let env = envelope.command.env_id();
        let current = self.applied_state(id, &env);
        if let Ok(applied) = deploy::apply::apply(current.as_ref(), None, envelope)
            && let Some(state) = applied.state
        {
            self.ledger().set_table(
                id,
                &env,
                RouteTable::build(&state),
                TableSource::Speculative,
            );
        }
    }

    /// The newest state any node applied: what an operator would read.
    pub(super) fn view(&self) -> Option<EnvironmentState> {
        let ledger = self.ledger();
        ledger
            .applied
            .values()
            .filter_map(|states| states.get(&self.env))
            .max_by_key(|state| state.generation)
            .cloned()
    }

    pub(super) async fn setup(&mut self) -> Result<(), SimError> {
        for index in 0..self.nodes.len() {
            self.start(index).await?;
        }
        let voters: BTreeMap<NodeId, ClusterNode> = self
            .nodes
            .iter()
            .filter(|n| n.voter)
            .map(|n| (n.id, Self::cluster_node(n.id)))
            .collect();
        if let Some(raft) = self.raft(0).cloned() {
            raft.initialize(voters)
                .await
                .map_err(|error| SimError::Start {
                    node: 1,
                    message: error.to_string(),
                })?;
        }
        let leader = self
            .wait_for_leader(Duration::from_secs(20))
            .await
            .ok_or(SimError::NoLeader(Duration::from_secs(20)))?;
        let learners: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.member && !n.voter)
            .map(|n| n.id)
            .collect();
        for id in learners {
            if let Some(raft) = self.raft(leader).cloned() {
                let added = tokio::time::timeout(
                    Duration::from_secs(10),
                    raft.add_learner(id, Self::cluster_node(id), false),
                )
                .await;
                self.trace(format!(
                    "learner n{id} added: {}",
                    matches!(added, Ok(Ok(_)))
                ));
            }
        }
        self.submit(
            Command::EnvInit {
                answers: EnvInitAnswers::default(),
                defaults: packs::default_bindings(),
            },
            "env init",
        )
        .await;
        self.add_deployment("shop").await;
        Ok(())
    }

    pub(super) async fn add_deployment(&mut self, bundle: &str) {
        let Ok(bundle_id) = bundle.parse() else {
            return;
        };
        self.submit(
            Command::BundleAdd(BundleAddAnswers {
                environment_id: self.env.clone(),
                bundle_id,
                customer_id: None,
                route_binding: RouteBinding {
                    path_prefixes: vec![format!("/{bundle}")],
                    ..Default::default()
                },
                revenue_share: None,
                authorization_ref: None,
                config_overrides: None,
                idempotency_key: None,
            }),
            "bundle add",
        )
        .await;
    }

    pub(super) fn deployments(state: &EnvironmentState) -> Vec<DeploymentId> {
        state
            .environment
            .bundles
            .iter()
            .map(|b| b.deployment_id)
            .collect()
    }

    pub(super) fn revisions_in(
        state: &EnvironmentState,
        lifecycle: Lifecycle,
    ) -> Vec<(DeploymentId, RevisionId)> {
        state
            .environment
            .revisions
            .iter()
            .filter(|r| r.lifecycle == lifecycle)
            .map(|r| (r.deployment_id, r.revision_id))
            .collect()
    }

    pub(super) fn revision_answers(&self, revision_id: RevisionId) -> RevisionAnswers {
        RevisionAnswers {
            environment_id: self.env.clone(),
            revision_id,
            idempotency_key: None,
        }
    }

    /// One operator or deployer action, chosen from what the newest state allows.
    pub(super) async fn operate(&mut self) {
        let Some(state) = self.view() else {
            self.setup_again().await;
            return;
        };
        let deployments = Self::deployments(&state);
        if deployments.is_empty() {
            self.add_deployment("shop").await;
            return;
        }
        let &deployment = deployments.choose(&mut self.rng).unwrap_or(&deployments[0]);
        let ready = Self::revisions_in(&state, Lifecycle::Ready);
        let staged = Self::revisions_in(&state, Lifecycle::Staged);
        let inactive = Self::revisions_in(&state, Lifecycle::Inactive);
        let in_split: BTreeSet<RevisionId> = state
            .environment
            .traffic_splits
            .iter()
            .flat_map(|s| s.entries.iter().map(|e| e.revision_id))
            .collect();
        let live = state
            .environment
            .revisions
            .iter()
            .filter(|r| r.lifecycle != Lifecycle::Archived)
            .count();
        if self.rng.random_bool(0.2) {
            self.operate_rollouts(&state).await;
            return;
        }
        match self.rng.random_range(0..100) {
            0..18 if live < 8 => {
                // A revision with something to run, as the edge stages a
                // bundle with a runtime section: only such a revision may
                // take traffic once ready.
                let Some(bundle_id) = state
                    .environment
                    .deployment(deployment)
                    .map(|d| d.bundle_id.clone())
                else {
                    return;
                };
                self.ids += 1;
                let revision_id =
                    RevisionId::from_ulid(ulid::Ulid::from_parts(self.ids, self.rng.random()));
                // One revision in five is bad: it fails a share of requests.
                if self.rng.random_bool(0.2) {
                    let share = self.rng.random_range(10..50);
                    self.failing.insert(revision_id, share);
                }
                let mut answers = RevisionStageAnswers::new(self.env.clone(), deployment);
                answers.bundle_path = Some(format!("{bundle_id}.gtbundle"));
                let Ok(bundle_digest) = "sha256:ab".parse() else {
                    return;
                };
                self.submit(
                    Command::RevisionStage {
                        answers,
                        staged: Some(Box::new(deploy::command::StagedBundle {
                            revision_id,
                            bundle_id,
                            bundle_digest,
                            pack_list: Vec::new(),
                            pack_list_lock_ref: String::new(),
                            runtime_instances: Some(1),
                            scaling: None,
                            secret_pins: Vec::new(),
                            config_reload: Default::default(),
                        })),
                    },
                    "stage",
                )
                .await;
            }
            0..30 if !staged.is_empty() => {
                let &(_, revision) = staged.choose(&mut self.rng).unwrap_or(&staged[0]);
                let answers = self.revision_answers(revision);
                self.submit(Command::warm(answers), "warm").await;
            }
            30..60 => {
                let choices: Vec<RevisionId> = ready
                    .iter()
                    .filter(|(d, _)| *d == deployment)
                    .map(|(_, r)| *r)
                    .collect();
                if choices.is_empty() {
                    return;
                }
                let count = self.rng.random_range(1..=choices.len().min(3));
                let mut picked = choices.clone();
                picked.shuffle(&mut self.rng);
                picked.truncate(count);
                let mut left = 10_000u32;
                let entries = picked
                    .iter()
                    .enumerate()
                    .map(|(i, revision)| {
                        let weight = if i + 1 == picked.len() {
                            left
                        } else {
                            self.rng.random_range(0..=left)
                        };
                        left -= weight;
                        TrafficEntryAnswers {
                            revision_id: revision.to_string(),
                            weight_bps: Some(weight),
                            weight_percent: None,
                            tag: None,
                        }
                    })
                    .collect();
                self.ids += 1;
                let key = format!("split-{}-{}", self.config.seed, self.ids);
                self.submit(
                    Command::TrafficSet(TrafficSetAnswers {
                        environment_id: self.env.clone(),
                        deployment_id: deployment,
                        entries,
                        updated_by: None,
                        idempotency_key: key,
                        authorization_ref: None,
                    }),
                    "traffic set",
                )
                .await;
            }
            60..66 => {
                self.submit(
                    Command::TrafficRollback(DeploymentAnswers {
                        environment_id: self.env.clone(),
                        deployment_id: deployment,
                        idempotency_key: None,
                    }),
                    "traffic rollback",
                )
                .await;
            }
            66..76 => {
                let candidates: Vec<RevisionId> = ready
                    .iter()
                    .map(|(_, r)| *r)
                    .filter(|r| !in_split.contains(r))
                    .collect();
                if let Some(&revision) = candidates.choose(&mut self.rng) {
                    let answers = self.revision_answers(revision);
                    self.submit(Command::RevisionDrain(answers), "drain").await;
                }
            }
            76..84 => {
                // Archive a revision: usually an inactive one; now and then
                // one that is still referenced, which must be refused.
                let pool: Vec<RevisionId> = if self.rng.random_bool(0.8) {
                    inactive.iter().map(|(_, r)| *r).collect()
                } else {
                    in_split.iter().copied().collect()
                };
                if let Some(&revision) = pool.choose(&mut self.rng) {
                    let answers = self.revision_answers(revision);
                    self.submit(Command::RevisionArchive(answers), "archive")
                        .await;
                }
            }
            84..94 => {
                // The deployer reports what a member's runtime owes (its
                // plan started a warm revision or drained one); with
                // nothing owed, the leader places what is not placed yet.
                if !self.send_a_report().await {
                    self.place().await;
                }
            }
            94..97 if deployments.len() < 2 => self.add_deployment("books").await,
            97 => {
                // Another environment: created once, refused as a duplicate after.
                let Ok(environment_id) = "prod-eu".parse() else {
                    return;
                };
                self.submit(
                    Command::EnvCreate(deploy::command::EnvCreateAnswers {
                        environment_id,
                        name: "Production EU".to_owned(),
                        region: Some("eu-west".to_owned()),
                        tenant_org_id: None,
                        listen_addr: None,
                        public_base_url: None,
                        gui_enabled: None,
                    }),
                    "env create",
                )
                .await;
            }
            _ => self.place().await,
        }
    }

    pub(super) async fn setup_again(&mut self) {
        self.submit(
            Command::EnvInit {
                answers: EnvInitAnswers::default(),
                defaults: packs::default_bindings(),
            },
            "env init",
        )
        .await;
    }

    pub(super) async fn report(&mut self, revision_id: RevisionId, outcome: RuntimeOutcome) {
        self.submit(
            Command::RevisionReport(RuntimeReport {
                environment_id: self.env.clone(),
                revision_id,
                outcome,
            }),
            "runtime report",
        )
        .await;
    }

    /// The leader's placement round, on the members it can see running.
    /// The decision carries the term of the member that leads when it is
    /// made, as the node's does; it then travels the ordinary write path
    /// (forwarded and retried while leadership moves), so the state
    /// machine's refusal of a decision that reaches the log in a later term
    /// runs under the simulation's faults.
    pub(super) async fn place(&mut self) {
        let Some(state) = self.view() else {
            return;
        };
        let Some(term) = self
            .nodes
            .iter()
            .filter_map(|n| n.handle.as_ref())
            .find(|handle| handle.is_leader())
            .map(|handle| handle.status().term)
        else {
            return;
        };
        let nodes: Vec<NodeCapacity> = self
            .nodes
            .iter()
            .filter(|n| n.member && n.handle.is_some())
            .map(|n| NodeCapacity {
                name: format!("n{}", n.id),
                capacity: NODE_CAPACITY,
                deployers: None,
            })
            .collect();
        if let Some(mut answers) = deploy::placement::changes(&state, &nodes) {
            answers.decided_in_term = Some(term);
            self.submit(Command::RevisionPlace(answers), "place").await;
        }
    }
}
