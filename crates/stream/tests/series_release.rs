//! Regression tests for "window state grows without bound with device
//! count" (issue 16, defect 3): every new series kept about 1.1 KB that was
//! never released, in memory and in the checkpoint.

use fleetscore_stream::{
    Aggregator, AggregatorConfig, Disposition, DropReason, LatePolicy, Reading, Span,
    WatermarkMode, WindowSpec,
};

const S: i64 = 1_000_000_000;

fn reading(device: &str, ts_s: i64) -> Reading<'_> {
    Reading {
        ts: ts_s * S,
        device,
        tag: "temp",
        value: ts_s as f64,
    }
}

/// Many devices each send one window's worth, then their clocks pass the
/// window's close: every series is released, and the snapshot (the
/// server's checkpoint) shrinks back to almost nothing.
#[test]
fn closed_series_are_released() {
    let cfg = AggregatorConfig::default();
    let mut agg = Aggregator::new(cfg.clone()).unwrap();
    let devices: Vec<String> = (0..10_000).map(|i| format!("device-{i:05}")).collect();
    let empty = agg.snapshot().len();
    for d in &devices {
        for s in [0, 20, 40] {
            agg.push(reading(d, s));
        }
    }
    assert_eq!(agg.series_count(), 10_000);
    let open = agg.snapshot().len();
    assert!(open > 10_000 * 100, "{open} bytes with every window open");

    // Each device's next reading, in the next window, closes its first.
    for d in &devices {
        agg.push(reading(d, 66));
    }
    assert_eq!(agg.drain_closed().count(), 10_000);
    assert_eq!(agg.series_count(), 10_000, "the new windows are open");
    // The caller's clock closes them: nothing is open any more.
    agg.advance_to(200 * S);
    assert_eq!(agg.drain_closed().count(), 10_000);
    assert_eq!(agg.series_count(), 0);
    assert_eq!(agg.open_panes(), 0);
    assert_eq!(agg.counters().series_released, 10_000);
    // What is left per device is its clock (name and newest time), so
    // that its late readings are still judged against it.
    assert_eq!(agg.idle_clocks(), 10_000);
    let closed = agg.snapshot().len();
    assert!(
        closed < open / 4 && closed < empty + 10_000 * 40,
        "snapshot {open} bytes open, {closed} bytes closed"
    );

    // A released series behaves as if it had been kept: its device's clock
    // is where it was, so an old reading is still late, and a new one
    // starts the series again.
    assert_eq!(
        agg.push(reading(&devices[7], 100)),
        Disposition::Dropped(DropReason::TooLate)
    );
    assert_eq!(agg.series_count(), 0);
    assert_eq!(agg.push(reading(&devices[7], 200)), Disposition::Accepted);
    assert_eq!(agg.series_count(), 1);
    assert_eq!(agg.watermark(&devices[7]), Some(195 * S));
    assert_eq!(agg.watermark(&devices[8]), Some(195 * S));

    // The shrunken snapshot restores to the same state.
    let bytes = agg.snapshot();
    let restored = Aggregator::restore(cfg, &bytes).unwrap();
    assert_eq!(restored.snapshot(), bytes);
    assert_eq!(restored.idle_clocks(), 9_999);
}

/// Past `max_series` live series, a reading that would start a new one is
/// shed: not aggregated, counted, and nothing of it is kept; readings of
/// live series go on, and once series are released new ones fit again.
#[test]
fn series_past_the_cap_are_shed_and_counted() {
    let mut agg = Aggregator::new(AggregatorConfig {
        max_series: 100,
        ..Default::default()
    })
    .unwrap();
    let devices: Vec<String> = (0..300).map(|i| format!("d{i}")).collect();
    for d in &devices {
        agg.push(reading(d, 10));
    }
    let c = agg.counters();
    assert_eq!((agg.series_count(), c.accepted, c.shed), (100, 100, 200));
    assert_eq!(c.dropped(), 200);
    assert_eq!(
        c.drop_reasons()[3],
        (DropReason::SeriesLimit, 200),
        "labelled series_limit"
    );
    assert_eq!(DropReason::SeriesLimit.as_str(), "series_limit");
    // A shed reading leaves no trace: not even its device's clock.
    assert_eq!(agg.watermark(&devices[150]), None);
    // Live series still take readings at the cap.
    assert_eq!(agg.push(reading(&devices[0], 20)), Disposition::Accepted);
    assert_eq!(
        agg.push(reading(&devices[150], 20)),
        Disposition::Dropped(DropReason::SeriesLimit)
    );
    // Closing frees room.
    agg.advance_to(100 * S);
    assert_eq!(agg.drain_closed().count(), 100);
    assert_eq!(agg.series_count(), 0);
    assert_eq!(agg.push(reading(&devices[150], 120)), Disposition::Accepted);
    let c = agg.counters();
    assert_eq!(
        c.received,
        c.accepted + c.adjusted + c.too_late + c.non_finite + c.out_of_range + c.shed
    );
    assert!(AggregatorConfig {
        max_series: 0,
        ..Default::default()
    }
    .validate()
    .is_err());
}

/// The probe's scenario at a smaller scale: three batches of 100,000 new
/// devices, one reading each. Quiet devices are closed at the caller's
/// flush (`close_quiet`), so the live series go back to zero after each
/// batch, and the snapshot does not grow with the devices seen.
#[test]
fn three_batches_of_new_devices_do_not_accumulate() {
    let cfg = AggregatorConfig {
        max_series: 150_000,
        ..Default::default()
    };
    let mut agg = Aggregator::new(cfg).unwrap();
    let mut snapshots = Vec::new();
    for batch in 0..3u64 {
        agg.set_arrival_time(batch * 10);
        for i in 0..100_000 {
            let name = format!("b{batch}-device-{i:06}");
            // Each batch an hour after the one before, as a live fleet sends.
            let ts = 1_000 + 3_600 * batch as i64;
            assert_eq!(agg.push(reading(&name, ts)), Disposition::Accepted);
        }
        assert_eq!(agg.series_count(), 100_000);
        // The flush after the idle period: everything sent before is quiet.
        agg.set_arrival_time(batch * 10 + 5);
        agg.close_quiet(batch * 10 + 5);
        assert_eq!(agg.drain_closed().count(), 100_000);
        assert_eq!(agg.series_count(), 0);
        snapshots.push(agg.snapshot().len());
    }
    // Only the idle clocks remain, bounded by max_series: the third batch
    // made the older half be forgotten.
    assert!(agg.idle_clocks() <= 150_000, "{}", agg.idle_clocks());
    assert!(agg.counters().clocks_forgotten >= 150_000);
    assert!(snapshots[2] <= snapshots[1], "{snapshots:?}");
    assert_eq!(agg.counters().shed, 0);
}

/// A device whose clock was forgotten (more idle devices than
/// `max_series`) starts at the floor, the newest forgotten clock: it can
/// never reopen, and so emit twice, a window it already emitted.
#[test]
fn forgotten_clocks_never_reopen_an_emitted_window() {
    for policy in [LatePolicy::Drop, LatePolicy::Adjust] {
        let mut agg = Aggregator::new(AggregatorConfig {
            max_series: 4,
            late_policy: policy,
            ..Default::default()
        })
        .unwrap();
        // Devices one after the other, as new devices join a live fleet.
        for i in 0..20 {
            let d = format!("d{i}");
            assert_eq!(agg.push(reading(&d, 1000 * i + 10)), Disposition::Accepted);
            agg.push(reading(&d, 1000 * i + 200));
            agg.flush_all();
        }
        let mut emitted: Vec<_> = agg
            .drain_closed()
            .map(|c| (c.window.device, c.window.start))
            .collect();
        assert_eq!(emitted.len(), 40);
        assert!(agg.counters().clocks_forgotten > 0);
        assert!(agg.idle_clocks() <= 4);
        // Every device sends again into its first window, and flushes.
        for i in 0..20 {
            let d = format!("d{i}");
            assert_ne!(agg.push(reading(&d, 1000 * i + 15)), Disposition::Accepted);
            agg.flush_all();
        }
        emitted.extend(
            agg.drain_closed()
                .map(|c| (c.window.device, c.window.start)),
        );
        let n = emitted.len();
        emitted.sort();
        emitted.dedup();
        assert_eq!(emitted.len(), n, "{policy:?}: a window was emitted twice");
    }
}

/// Global watermark: series are released too, the fleet clock stays.
#[test]
fn global_watermark_releases_series_and_keeps_the_clock() {
    let mut agg = Aggregator::new(AggregatorConfig {
        watermark: WatermarkMode::Global,
        windows: vec![WindowSpec::hopping(
            Span::from_secs(60),
            Span::from_secs(20),
        )],
        ..Default::default()
    })
    .unwrap();
    for i in 0..1000 {
        agg.push(reading(&format!("d{i}"), 10));
    }
    agg.push(reading("late-comer", 500));
    assert_eq!(agg.drain_closed().count(), 3000);
    assert_eq!(agg.series_count(), 1);
    assert_eq!(agg.idle_clocks(), 0);
    assert_eq!(
        agg.push(reading("d1", 20)),
        Disposition::Dropped(DropReason::TooLate)
    );
    assert_eq!(agg.series_count(), 1);
}
