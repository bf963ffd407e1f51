//! The store and the queue's bookkeeping, without a gateway: what each
//! change leaves on disk, and what a reopen reads back.

use super::{
    record::{
        Progress, Receipt, Receipts, StoredDead, StoredEntry, StoredReport, REPORT_DELIVERED,
    },
    store::{Change, Done, Finish, LoadedEntry, Settle, Store},
};

struct Dir(std::path::PathBuf);

/// Opens the store, collecting the entries it reads back.
fn open(dir: &Dir) -> (Store, Vec<LoadedEntry>, super::store::Recovery) {
    let mut entries = Vec::new();
    let (store, _, recovery) = Store::open(&dir.0, &mut |e| entries.push(e)).unwrap();
    (store, entries, recovery)
}

impl Dir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "peg-durable-unit-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn entry(tenant: &str, i: u32) -> StoredEntry {
    StoredEntry {
        trace_id: Vec::new(),
        span_id: Vec::new(),
        trace_flags: 0,
        tenant: tenant.into(),
        batch_id: "b".into(),
        index: i,
        source: "aws.partner/example.com/t/e".into(),
        region: "us-east-1".into(),
        time: None,
        detail_type: "T".into(),
        detail: format!("{{\"i\":{i}}}"),
        resources: vec![],
        accepted_ms: 1_000,
        age_from_ms: 1_000,
    }
}

fn report(r: Receipt, completed_ms: u64) -> StoredReport {
    StoredReport {
        receipt: r.to_bytes(),
        outcome: REPORT_DELIVERED,
        tenant: "t".into(),
        event_id: format!("ev-{}", r.0),
        completed_ms,
        ..StoredReport::default()
    }
}

#[test]
fn every_change_reads_back_after_a_reopen() {
    let dir = Dir::new("reopen");
    let receipts = Receipts::default();
    let r: Vec<Receipt> = (0..4).map(|i| receipts.next(1_000 + i)).collect();
    let file_id;
    {
        let (store, loaded, recovery) = open(&dir);
        assert!(loaded.is_empty() && recovery.damaged_file.is_none());
        file_id = store.file_id();
        let mut seq = 0;
        store
            .apply(
                &[Change::Enqueue(
                    r.iter()
                        .enumerate()
                        .map(|(i, r)| (*r, entry("t", i as u32)))
                        .collect(),
                )],
                &mut seq,
            )
            .unwrap();
        // One delivered, one dead, one in a round, one untouched.
        store
            .apply(
                &[
                    Change::Settle(Settle {
                        finishes: vec![Finish {
                            receipt: r[0],
                            report: report(r[0], 5_000),
                            dead: None,
                            progress_row: false,
                        }],
                        ..Settle::default()
                    }),
                    Change::Settle(Settle {
                        finishes: vec![Finish {
                            receipt: r[1],
                            report: report(r[1], 5_000),
                            dead: Some(StoredDead {
                                entry: Some(entry("t", 1)),
                                error_code: "AccessDeniedException".into(),
                                ..StoredDead::default()
                            }),
                            progress_row: false,
                        }],
                        ..Settle::default()
                    }),
                    // r[2] failed retryably once, then a second round
                    // started and never ended.
                    Change::Settle(Settle {
                        retries: vec![(
                            r[2],
                            Progress {
                                attempts: 1,
                                ..Progress::default()
                            },
                        )],
                        ..Settle::default()
                    }),
                    Change::Start {
                        round: 7,
                        receipts: vec![r[2]],
                    },
                ],
                &mut seq,
            )
            .unwrap();
        assert_eq!(seq, 2);
    }
    let mut entries = Vec::new();
    let (store, loaded, _) = Store::open(&dir.0, &mut |e| entries.push(e)).unwrap();
    assert_eq!(store.file_id(), file_id, "the file keeps its id");
    let mut queued: Vec<Receipt> = entries.iter().map(|e| e.receipt).collect();
    queued.sort();
    assert_eq!(queued, vec![r[2], r[3]]);
    let in_round = entries.iter().find(|e| e.receipt == r[2]).unwrap();
    assert!(in_round.progress.in_round && in_round.progress.attempts == 1);
    assert_eq!((loaded.dead, loaded.last_seq), (1, 2));
    assert_eq!(
        store.report_of(r[0]).unwrap().unwrap().event_id,
        format!("ev-{}", r[0].0)
    );
    let reports = store.reports_after(0, 10).unwrap();
    assert_eq!(
        reports.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(store.reports_after(1, 10).unwrap().len(), 1);
    assert_eq!(
        store.dead_letter(r[1]).unwrap().unwrap().error_code,
        "AccessDeniedException"
    );
    assert_eq!(store.entry(r[3]).unwrap().unwrap().detail, "{\"i\":3}");
    let of = |entries: &[LoadedEntry], r: Receipt| {
        let e = entries.iter().find(|e| e.receipt == r).unwrap();
        (e.progress.in_round, e.progress_row)
    };
    assert_eq!(of(&entries, r[2]), (true, true));
    assert_eq!(
        of(&entries, r[3]),
        (false, false),
        "never in a round: no row"
    );
    // The open round's row became r[2]'s own mark: a second start (after
    // another stop before its next round) still counts it possibly sent.
    drop(store);
    let (_store, entries, _) = open(&dir);
    assert_eq!(of(&entries, r[2]), (true, true));
    assert_eq!(of(&entries, r[3]), (false, false));
}

#[test]
fn replay_purge_and_expiry() {
    let dir = Dir::new("replay");
    let receipts = Receipts::default();
    let (a, b) = (receipts.next(1), receipts.next(2));
    let (store, _, _) = open(&dir);
    let mut seq = 0;
    let dead = |r: Receipt| Finish {
        receipt: r,
        progress_row: false,
        report: report(r, 1_000),
        dead: Some(StoredDead {
            entry: Some(entry("t", 0)),
            attempts: 3,
            redelivered: true,
            ..StoredDead::default()
        }),
    };
    store
        .apply(
            &[
                Change::Enqueue(vec![(a, entry("t", 0)), (b, entry("t", 1))]),
                Change::Settle(Settle {
                    finishes: vec![dead(a), dead(b)],
                    ..Settle::default()
                }),
            ],
            &mut seq,
        )
        .unwrap();
    let done = store
        .apply(
            &[Change::Replay {
                receipts: vec![a, Receipt(7)],
                now_ms: 9_000,
            }],
            &mut seq,
        )
        .unwrap();
    let Done::Replayed { entries, not_found } = &done[0] else {
        panic!("{done:?}")
    };
    assert_eq!(not_found, &vec![Receipt(7)]);
    let (r, e, p) = &entries[0];
    assert_eq!(
        (*r, e.age_from_ms, p.attempts, p.maybe_sent),
        (a, 9_000, 3, true)
    );
    assert!(store.dead_letter(a).unwrap().is_none());
    assert!(store.entry(a).unwrap().is_some(), "back in the queue");
    assert!(
        store.report_of(a).unwrap().is_none(),
        "its old report no longer answers for it"
    );
    let done = store.apply(&[Change::Purge(vec![a, b])], &mut seq).unwrap();
    let Done::Purged { freed, not_found } = &done[0] else {
        panic!("{done:?}")
    };
    assert_eq!((freed.len(), not_found.clone()), (1, vec![a]));
    // Reports completed before 2,000 go; b's report (1,000) among them.
    let done = store
        .apply(&[Change::Expire { before_ms: 2_000 }], &mut seq)
        .unwrap();
    assert!(matches!(done[0], Done::Expired(2)), "{done:?}");
    assert!(store.reports_after(0, 10).unwrap().is_empty());
}

#[test]
fn a_second_opener_is_refused_with_a_clear_error() {
    let dir = Dir::new("lock");
    let _first = open(&dir);
    let err = Store::open(&dir.0, &mut |_| {}).err().expect("refused");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_queue_is_moved_aside_and_a_new_one_serves() {
    let dir = Dir::new("garbage");
    std::fs::write(dir.0.join("queue.redb"), vec![0x5a; 64 * 1024]).unwrap();
    let (store, loaded, recovery) = open(&dir);
    assert!(loaded.is_empty());
    let aside = recovery.damaged_file.expect("moved aside");
    assert!(aside.exists(), "kept for inspection");
    assert_eq!(recovery.salvaged, 0);
    let mut seq = 0;
    let r = Receipts::default().next(1);
    store
        .apply(&[Change::Enqueue(vec![(r, entry("t", 0))])], &mut seq)
        .unwrap();
    assert!(store.entry(r).unwrap().is_some());
}

#[test]
fn dead_letters_come_a_page_at_a_time() {
    let dir = Dir::new("pages");
    let receipts = Receipts::default();
    let r: Vec<Receipt> = (0..5).map(|i| receipts.next(10 + i)).collect();
    let (store, _, _) = open(&dir);
    let mut seq = 0;
    let tenant = |i: usize| if i.is_multiple_of(2) { "even" } else { "odd" };
    store
        .apply(
            &[
                Change::Enqueue(
                    r.iter()
                        .enumerate()
                        .map(|(i, r)| (*r, entry(tenant(i), 0)))
                        .collect(),
                ),
                Change::Settle(Settle {
                    finishes: r
                        .iter()
                        .enumerate()
                        .map(|(i, r)| Finish {
                            receipt: *r,
                            report: report(*r, 1),
                            dead: Some(StoredDead {
                                entry: Some(entry(tenant(i), 0)),
                                ..StoredDead::default()
                            }),
                            progress_row: false,
                        })
                        .collect(),
                    ..Settle::default()
                }),
            ],
            &mut seq,
        )
        .unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (page, total) = store.dead_letters(after, 2, true, |_| true).unwrap();
        assert_eq!(total, 5);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|(r, _)| *r);
        seen.extend(page.into_iter().map(|(r, _)| r));
    }
    assert_eq!(seen, r, "every one once, oldest first");
    let (page, total) = store
        .dead_letters(Some(r[0]), 10, false, |d| {
            d.entry.as_ref().unwrap().tenant == "even"
        })
        .unwrap();
    assert_eq!(total, 3, "the filter's total counts every page");
    assert_eq!(
        page.into_iter().map(|(r, _)| r).collect::<Vec<_>>(),
        vec![r[2], r[4]]
    );
}
