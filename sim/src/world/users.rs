//! The users: requests through every member's router (the route table
//! built from the member's committed state, the weighted pick, signed
//! sticky cookies), recorded in the ledger.

use super::*;

impl World {
    /// Users: requests through random running routers, some in sticky sessions.
    pub(super) fn serve(&mut self) {
        for _ in 0..self.config.requests_per_step {
            let up = self.up();
            let Some(&node) = up.choose(&mut self.rng) else {
                return;
            };
            let id = self.nodes[node].id;
            let session = self.rng.random_range(0..self.sessions.len().max(1));
            // Only the chosen deployment's route is copied out of the ledger.
            let chosen = {
                let ledger = self
                    .ledger
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                ledger
                    .tables
                    .get(&id)
                    .and_then(|tables| tables.get(&self.env))
                    .and_then(|(table, _)| {
                        table
                            .deployments()
                            .choose(&mut self.rng)
                            .map(|route| (table.generation(), route.clone()))
                    })
            };
            let Some((generation, route)) = chosen else {
                self.stats.no_route += 1;
                continue;
            };
            let route = &route;
            let now_unix = (self.epoch
                + chrono::Duration::from_std(self.ledger().trace.elapsed())
                    .unwrap_or_else(|_| chrono::Duration::zero()))
            .timestamp();
            let Some(session_state) = self.sessions.get_mut(session) else {
                continue;
            };
            // The router's own choice: a verified cookie of the current split
            // generation whose revision still has weight, else a weighted pick.
            let pinned = session_state
                .cookies
                .get(&route.deployment_id)
                .and_then(|cookie| {
                    sticky::verify(
                        &self.sticky_key,
                        cookie,
                        &self.env,
                        route.deployment_id,
                        route.split_generation,
                        now_unix,
                    )
                    .ok()
                    .filter(|revision| route.pick.contains(*revision))
                });
            let revision = match pinned {
                Some(revision) => revision,
                None => {
                    self.picks += 1;
                    let revision = route.pick.pick(pick_point(self.picks));
                    session_state.cookies.insert(
                        route.deployment_id,
                        sticky::issue(
                            &self.sticky_key,
                            &self.env,
                            route.deployment_id,
                            revision,
                            route.split_generation,
                            now_unix + 3600,
                        ),
                    );
                    revision
                }
            };
            // A cookie lives an hour: a session whose cookie expired may
            // move (a long faulty run lasts hours of simulated time).
            let expires = match (pinned, session_state.last.get(&route.deployment_id)) {
                (Some(_), Some((_, _, expires))) => *expires,
                _ => now_unix + 3600,
            };
            let previous = session_state.last.insert(
                route.deployment_id,
                (revision, route.split_generation, expires),
            );
            let flipped = previous.filter(|(was, split_generation, expired_at)| {
                *was != revision
                    && *split_generation == route.split_generation
                    && *expired_at > now_unix
            });
            let at = self.ledger().trace.elapsed();
            let mut ledger = self.ledger();
            if let Some((was, split_generation, _)) = flipped {
                ledger.violate(
                    names::STICKY_STAYS,
                    format!(
                        "session {session} moved from {was} to {revision} under split generation {split_generation} of {}",
                        route.deployment_id
                    ),
                );
            }
            ledger.served.push(Served {
                node: id,
                env: self.env.clone(),
                generation,
                deployment: route.deployment_id,
                split_generation: route.split_generation,
                revision,
                at,
            });
            drop(ledger);
            self.counted(node, revision);
            self.stats.served += 1;
        }
    }

    pub(super) fn pick_node(&mut self, filter: impl Fn(&Node) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|i| filter(&self.nodes[*i]))
            .collect();
        candidates.choose(&mut self.rng).copied()
    }
}
