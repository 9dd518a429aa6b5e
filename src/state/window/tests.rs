use proptest::prelude::*;

use super::*;

fn fx(v: i64) -> Fixed {
    Fixed::from_raw(v)
}

const ALL: WindowNeeds = WindowNeeds {
    max: true,
    min: true,
    slots: true,
};

#[test]
fn keeps_samples_exactly_span_old_and_drops_older() {
    let mut w = Window::new(3_000, ALL);
    w.advance(0);
    w.push(0, fx(100), fx(1));
    w.advance(1_000);
    w.push(1_000, fx(90), fx(1));
    w.advance(3_000);
    assert_eq!(
        w.max().unwrap(),
        Extreme {
            time_ns: 0,
            value: fx(100)
        },
        "a sample exactly `span` old is inside"
    );
    w.advance(3_001);
    assert_eq!(w.max().unwrap().value, fx(90), "one ns later it is gone");
    assert_eq!(w.count(), 1);
    assert_eq!(w.first(), Some(fx(90)));
}

#[test]
fn equal_maxima_keep_the_latest_time() {
    let mut w = Window::new(10, WindowNeeds::MAX);
    w.push(1, fx(5), fx(0));
    w.push(2, fx(5), fx(0));
    assert_eq!(w.max().unwrap().time_ns, 2);
}

#[test]
fn vwap_weights_by_size() {
    let mut w = Window::new(10, WindowNeeds::SLOTS);
    w.push(1, Fixed::parse("100").unwrap(), Fixed::parse("1").unwrap());
    w.push(2, Fixed::parse("110").unwrap(), Fixed::parse("3").unwrap());
    assert_eq!(w.vwap().unwrap(), Fixed::parse("107.5").unwrap());
    assert_eq!(w.mean().unwrap(), Fixed::parse("105").unwrap());
    assert_eq!(w.sum().unwrap(), Fixed::parse("210").unwrap());
    assert_eq!(w.last(), Some(Fixed::parse("110").unwrap()));
}

#[test]
fn long_windows_use_buckets_and_bounded_memory() {
    let span = 300 * 1_000_000_000; // 5 minutes: buckets of 1 s
    let mut w = Window::new(span, ALL);
    assert_eq!(w.bucket_ns(), 1_000_000_000);
    // 1,000 ticks a second for 10 minutes.
    for i in 0..600_000i64 {
        let t = i * 1_000_000;
        w.advance(t);
        w.push(t, fx(1_000 + (i % 7)), fx(1));
    }
    assert!(w.held() <= 3 * 302, "held {}", w.held());
    assert!(w.count() >= 300_000 && w.count() <= 301_000, "count {}", w.count());
}

#[test]
fn empty_window_answers_none() {
    let w = Window::new(10, ALL);
    assert_eq!(
        (w.max(), w.min(), w.mean(), w.vwap(), w.first(), w.last()),
        (None, None, None, None, None, None)
    );
    assert_eq!(w.count(), 0);
}

/// Naive aggregates over the samples inside `[now - span, now]`.
fn naive(
    samples: &[(i64, i64, i64)],
    now: i64,
    span: i64,
) -> (Option<i64>, Option<i64>, i128, u64, Option<i64>, Option<i64>) {
    let inside: Vec<_> = samples
        .iter()
        .filter(|(t, _, _)| *t >= now - span && *t <= now)
        .collect();
    let max = inside.iter().map(|s| s.1).max();
    let min = inside.iter().map(|s| s.1).min();
    let sum = inside.iter().map(|s| i128::from(s.1)).sum();
    let first = inside.first().map(|s| s.1);
    let last = inside.last().map(|s| s.1);
    (max, min, sum, inside.len() as u64, first, last)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Every aggregate of an exact window equals a recomputation over the
    /// same samples, after every sample.
    #[test]
    fn exact_window_matches_naive(
        steps in prop::collection::vec((0i64..2_000, 1i64..1_000_000, 0i64..1_000), 1..200),
        span in 1i64..5_000,
    ) {
        let mut w = Window::new(span, ALL);
        let mut samples = Vec::new();
        let mut t = 1_000_000i64;
        for (dt, v, size) in steps {
            t += dt;
            w.advance(t);
            w.push(t, fx(v), fx(size));
            samples.push((t, v, size));
            let (max, min, sum, count, first, last) = naive(&samples, t, span);
            prop_assert_eq!(w.max().map(|e| e.value.raw()), max);
            prop_assert_eq!(w.min().map(|e| e.value.raw()), min);
            prop_assert_eq!(w.sum_raw(), sum);
            prop_assert_eq!(w.count(), count);
            prop_assert_eq!(w.first().map(Fixed::raw), first);
            prop_assert_eq!(w.last().map(Fixed::raw), last);
            prop_assert_eq!(w.mean().map(Fixed::raw), (count > 0).then(|| (sum / i128::from(count)) as i64));
        }
    }

    /// A bucketed window equals the naive aggregate over the buckets that
    /// overlap the span.
    #[test]
    fn bucketed_window_matches_naive_over_buckets(
        steps in prop::collection::vec((0i64..400_000_000, 1i64..1_000_000), 1..150),
    ) {
        let span = 120 * 1_000_000_000; // 2 minutes: buckets of 400 ms
        let mut w = Window::new(span, ALL);
        let bucket = w.bucket_ns();
        let mut samples = Vec::new();
        let mut t = 10_000_000_000i64;
        for (dt, v) in steps {
            t += dt;
            w.advance(t);
            w.push(t, fx(v), fx(1));
            samples.push((t - t.rem_euclid(bucket), v, 1));
            // Buckets overlapping [t - span, t] start at or after t - span - bucket + 1.
            let (max, min, sum, count, _, last) = naive(&samples, t, span + bucket - 1);
            prop_assert_eq!(w.max().map(|e| e.value.raw()), max);
            prop_assert_eq!(w.min().map(|e| e.value.raw()), min);
            prop_assert_eq!(w.sum_raw(), sum);
            prop_assert_eq!(w.count(), count);
            prop_assert_eq!(w.last().map(Fixed::raw), last);
        }
    }
}

#[test]
fn consistency_check_accepts_built_windows_and_names_what_is_wrong() {
    let key = |span_ns| WindowKey {
        field: Field::Price,
        span_ns,
    };
    for span in [3_000, 2 * EXACT_SPAN_LIMIT_NS] {
        let mut w = Window::new(span, ALL);
        for (i, v) in [100, 90, 95, 80, 120].into_iter().enumerate() {
            let t = i as i64 * span / 4;
            w.advance(t);
            w.push(t, fx(v), fx(2));
        }
        assert_eq!(w.check_consistent(key(span)), Ok(()));
        assert!(w.check_consistent(key(span + 1)).is_err());

        let mut off = w.clone();
        off.count += 1;
        assert_eq!(
            off.check_consistent(key(span)),
            Err("running totals differ from the sum of the slots")
        );
        let mut unordered = w.clone();
        unordered.maxq.push_back(Extreme {
            time_ns: span,
            value: fx(1_000),
        });
        assert_eq!(
            unordered.check_consistent(key(span)),
            Err("max or min deque out of order")
        );
        let mut extra = Window::new(span, WindowNeeds::MAX);
        extra.slots = w.slots.clone();
        assert_eq!(
            extra.check_consistent(key(span)),
            Err("holds samples for an aggregate it does not keep")
        );
    }
}

#[test]
fn extremes_since_a_time_read_only_later_samples() {
    const S: i64 = 1_000_000_000;
    // A bucketed window (60m, 12 s buckets): extremes keep their own
    // times, so a look-back from inside a bucket is exact.
    let mut w = Window::new(3_600 * S, WindowNeeds::MAX.union(WindowNeeds::MIN));
    for (t, v) in [(0, 100), (5 * S, 130), (13 * S, 90), (14 * S, 120), (15 * S, 110)] {
        w.advance(t);
        w.push(t, fx(v), fx(1));
    }
    assert_eq!(w.max().unwrap().value, fx(130));
    assert_eq!(w.min().unwrap().value, fx(90));
    assert_eq!(
        w.max_since(6 * S).unwrap(),
        Extreme {
            time_ns: 14 * S,
            value: fx(120)
        }
    );
    assert_eq!(w.min_since(6 * S).unwrap().value, fx(90));
    assert_eq!(w.min_since(13 * S + 1).unwrap().value, fx(110));
    assert_eq!(w.max_since(15 * S).unwrap().value, fx(110));
    assert_eq!(w.max_since(15 * S + 1), None);
    // Expiry still goes by bucket: the sample at 5 s leaves with its
    // bucket [0, 12 s), once the span no longer overlaps it.
    w.advance(3_600 * S + 11 * S);
    assert_eq!(w.max().unwrap().value, fx(130));
    w.advance(3_600 * S + 12 * S);
    assert_eq!(w.max().unwrap().value, fx(120));
}
