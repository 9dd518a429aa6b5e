//! A pattern's positive steps as a small automaton: nodes are (step,
//! progress) and edges are labelled with the events that take them.
//!
//! For a step of one event or an `or` group with count `{n,m}`, the nodes
//! are "counted c of its events" for c = 1..m (`{n,}`: 1..n, where node n
//! loops on further events); nodes c ≥ n are done and lead on to the next
//! step. For an `and` group of k members, the nodes are the non-empty
//! subsets seen, the full one done. The last step's done node is the
//! match itself (a `{n,m}` last step completes at n: later events could
//! only make a longer match ending later). Every node index is higher
//! than those of the nodes before it, except a count's own loop.

/// Where an edge leads: a node, or [`super::DONE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The events that take it (any of), as bits of the pattern's events.
    pub events: u32,
    pub target: u16,
    /// Only for a partial that entered its node at the previous event.
    pub strict: bool,
    /// The step whose event this is (its values are bound on the way).
    pub step: u8,
}

/// One node: a partial match that got this far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub edges: Vec<Edge>,
    /// Whether some edge out of it is strict (a partial that just entered
    /// differs from one that has waited).
    pub strict_out: bool,
    /// Whether some edge out of it is relaxed (a partial may wait here).
    pub relaxed_out: bool,
}

/// What one step waits for, with its events already numbered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Any of these events (one event, or an `or` group).
    Any(u32),
    /// Each of these events once, in any order.
    All(Vec<u32>),
}

/// One positive step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepSpec {
    pub unit: Unit,
    pub min: u32,
    /// `None` for `{n,}`.
    pub max: Option<u32>,
    /// Entered with `=>`: its first event must be the next one, and so must
    /// each further event of its count.
    pub strict: bool,
}

/// The automaton: its nodes and the edges that start a match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Automaton {
    pub nodes: Vec<Node>,
    pub starts: Vec<Edge>,
}

impl Automaton {
    /// Most edges out of one node (or of the start).
    pub fn fan_out(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| n.edges.len())
            .chain(std::iter::once(self.starts.len()))
            .max()
            .unwrap_or(0)
    }
}

/// Builds the automaton of `steps` (at least one), or says how many nodes
/// it would need when that is more than `max_nodes`.
///
/// # Errors
/// The number of nodes needed, when too many.
pub fn build(steps: &[StepSpec], max_nodes: usize) -> Result<Automaton, usize> {
    let needed: usize = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let last = i + 1 == steps.len();
            match &s.unit {
                Unit::Any(_) if last => s.min as usize - 1,
                Unit::Any(_) => s.max.unwrap_or(s.min) as usize,
                Unit::All(m) => (1usize << m.len()) - 1 - usize::from(last),
            }
        })
        .sum();
    if needed > max_nodes {
        return Err(needed);
    }
    let mut a = Automaton::default();
    // Done nodes of the previous step; `None` entry means the start.
    let mut from: Vec<Option<u16>> = vec![None];
    for (i, s) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        let step = i as u8;
        let strict = s.strict;
        let edge_from = |a: &mut Automaton, src: Option<u16>, edge: Edge| match src {
            None => a.starts.push(edge),
            Some(n) => a.nodes[usize::from(n)].edges.push(edge),
        };
        match &s.unit {
            Unit::Any(events) => {
                let events = *events;
                let top = if last { s.min } else { s.max.unwrap_or(s.min) };
                let first = a.nodes.len() as u16;
                let count_node = |c: u32| -> u16 {
                    if last && c == s.min {
                        super::DONE
                    } else {
                        first + (c as u16 - 1)
                    }
                };
                let real = if last { top - 1 } else { top };
                for _ in 0..real {
                    a.nodes.push(Node::default());
                }
                for src in &from {
                    edge_from(
                        &mut a,
                        *src,
                        Edge {
                            events,
                            target: count_node(1),
                            strict,
                            step,
                        },
                    );
                }
                for c in 1..top {
                    let edge = Edge {
                        events,
                        target: count_node(c + 1),
                        strict,
                        step,
                    };
                    edge_from(&mut a, Some(first + (c as u16 - 1)), edge);
                }
                if !last && s.max.is_none() {
                    let n = first + (s.min as u16 - 1);
                    edge_from(
                        &mut a,
                        Some(n),
                        Edge {
                            events,
                            target: n,
                            strict,
                            step,
                        },
                    );
                }
                from = if last {
                    Vec::new()
                } else {
                    (s.min..=top).map(|c| Some(first + (c as u16 - 1))).collect()
                };
            }
            Unit::All(members) => {
                let k = members.len();
                let full = (1usize << k) - 1;
                let first = a.nodes.len() as u16;
                // Node of subset `set` (1..=full).
                let node_of = |set: usize| -> u16 {
                    if last && set == full {
                        super::DONE
                    } else {
                        first + (set as u16 - 1)
                    }
                };
                let real = if last { full - 1 } else { full };
                for _ in 0..real {
                    a.nodes.push(Node::default());
                }
                for src in &from {
                    for (j, &ev) in members.iter().enumerate() {
                        edge_from(
                            &mut a,
                            *src,
                            Edge {
                                events: ev,
                                target: node_of(1 << j),
                                strict,
                                step,
                            },
                        );
                    }
                }
                for set in 1..full {
                    for (j, &ev) in members.iter().enumerate() {
                        if set & (1 << j) == 0 {
                            let edge = Edge {
                                events: ev,
                                target: node_of(set | (1 << j)),
                                strict,
                                step,
                            };
                            edge_from(&mut a, Some(node_of(set)), edge);
                        }
                    }
                }
                from = if last { Vec::new() } else { vec![Some(node_of(full))] };
            }
        }
    }
    for n in &mut a.nodes {
        n.strict_out = n.edges.iter().any(|e| e.strict);
        n.relaxed_out = n.edges.iter().any(|e| !e.strict);
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(events: u32, min: u32, max: Option<u32>, strict: bool) -> StepSpec {
        StepSpec {
            unit: Unit::Any(events),
            min,
            max,
            strict,
        }
    }

    #[test]
    fn a_two_step_sequence_is_one_node() {
        let a = build(&[one(1, 1, Some(1), false), one(2, 1, Some(1), true)], 64).unwrap();
        assert_eq!(a.nodes.len(), 1);
        assert_eq!(a.starts[0].target, 0);
        assert_eq!(a.nodes[0].edges[0].target, super::super::DONE);
        assert!(a.nodes[0].strict_out && !a.nodes[0].relaxed_out);
    }

    #[test]
    fn counts_ranges_and_loops() {
        // A{2,3} -> B: nodes A1 A2 A3; A2 and A3 lead to B.
        let a = build(&[one(1, 2, Some(3), false), one(2, 1, Some(1), false)], 64).unwrap();
        assert_eq!(a.nodes.len(), 3);
        assert_eq!(a.nodes[1].edges.len(), 2);
        assert_eq!(a.nodes[2].edges.len(), 1);
        // A{2,} -> B: A2 loops.
        let a = build(&[one(1, 2, None, false), one(2, 1, Some(1), false)], 64).unwrap();
        assert_eq!(a.nodes.len(), 2);
        assert!(a.nodes[1].edges.iter().any(|e| e.target == 1));
        // A{3} last: two nodes, the third A completes.
        let a = build(&[one(1, 3, Some(3), false)], 64).unwrap();
        assert_eq!(a.nodes.len(), 2);
    }

    #[test]
    fn and_groups_are_subsets() {
        let a = build(
            &[StepSpec {
                unit: Unit::All(vec![1, 2, 4]),
                min: 1,
                max: Some(1),
                strict: false,
            }],
            64,
        )
        .unwrap();
        assert_eq!(a.nodes.len(), 6);
        assert_eq!(a.starts.len(), 3);
        assert_eq!(
            build(&[one(1, 64, Some(64), false), one(1, 64, Some(64), false)], 100),
            Err(127)
        );
    }
}
