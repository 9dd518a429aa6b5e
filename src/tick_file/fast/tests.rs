//! The fast path reads what the general path reads, or declines.

use proptest::prelude::*;

use super::super::row::parse_row;
use super::super::ColumnMapping;
use super::*;

/// `text` at the start of a window, padded with `pad`.
fn window(text: &str, pad: u8) -> [u8; WINDOW] {
    let mut window = [pad; WINDOW];
    window[..text.len()].copy_from_slice(text.as_bytes());
    window
}

fn layout(header: &str) -> Layout {
    Layout::resolve(header, &ColumnMapping::default()).unwrap()
}

/// The fast path on `line` (without its end) followed by `ending`, checked
/// against the general path: the same row, or declined with nothing
/// interned. Returns whether the fast path read it.
fn agrees(header: &str, line: &str, ending: &str) -> bool {
    let layout = layout(header);
    let mut fast = FastLayout::new(&layout).unwrap();
    let (mut a, mut b) = (Symbols::default(), Symbols::default());
    let slow = parse_row(&layout, &mut b, 7, line.as_bytes());
    let text = format!("{line}{ending}");
    if text.len() > WINDOW {
        return false;
    }
    if text.ends_with('\n') {
        for pad in [b',', b'\n', b'.', 0xff] {
            assert_eq!(
                parse_fast(&mut fast, &mut Symbols::default(), 7, &window(&text, pad)),
                parse_fast(&mut fast, &mut Symbols::default(), 7, &window(&text, b'7')),
                "{line:?}: depends on the bytes after the line"
            );
        }
    }
    match parse_fast(&mut fast, &mut a, 7, &window(&text, b'7')) {
        Some((row, len)) => {
            assert_eq!(Some(&row), slow.as_ref().ok(), "{line:?}");
            assert_eq!(len, text.len(), "{line:?}");
            assert_eq!(a.names, b.names, "{line:?}");
            // Again: the symbol is found, the next number given.
            let (again, _) = parse_fast(&mut fast, &mut a, 8, &window(&text, b'7')).unwrap();
            assert_eq!((again.instrument, again.seq, again.line), (0, 2, 8), "{line:?}");
            true
        }
        None => {
            assert!(a.names.is_empty(), "{line:?}");
            false
        }
    }
}

#[test]
fn the_fast_row_path_agrees_with_parse_row() {
    let header = "instrument,ts_ms,price,size,note";
    for (line, fast) in [
        ("BTC-USDT,1700000000000,65000.5,0.25,x", true),
        ("BTC-USDT,1700000000000.123456,65000.5,,", true),
        ("BTC,1.5,1,,x", true),
        ("BTC,1.,1,,x", true),
        ("BTC,1.1234567,1,1,x", false),
        ("BTC,12345678901,1,1,x", true),
        ("BTC,123456789012345678,1,1,x", false),
        ("BTC,1234567890123456789,1,1,x", false),
        ("BTC,12345678901234567890,1,1,x", false),
        ("A-VERY-LONG-SYMBOL-NAME,1,2,3,x", true),
        ("FIFTEEN-BYTES-X,1,2,3,x", true),
        ("SIXTEEN-BYTES-XY,1,2,3,x", true),
        (" BTC,1,1,1,x", false),
        ("BTC ,1,1,1,x", false),
        ("BTC,1,1,1", false),
        ("BTC,1,1,1,x,y", false),
        (",1,1,1,x", false),
        ("BTC,,1,1,x", false),
        ("BTC,1,,1,x", false),
        ("BTC,-1,1,1,x", false),
        ("BTC,1 ,1,1,x", false),
        ("BTC,1,1e3,1,x", false),
        ("BTC,1,1, 2,x", false),
        ("BTC,1,NaN,1,x", false),
        ("BTC,1,1.2.3,1,x", false),
        ("BTC,1,0.123456789,1,x", false),
        ("BTC,1,0.123456780,1,x", false),
        ("BTC,1,0.12345678,1,x", true),
        ("BTC,1,-0.5,-0,x", true),
        ("BTC,1,+7,.5,x", true),
        ("BTC,1,-.5,0,x", true),
        ("BTC,1,-,1,x", false),
        ("BTC,1,.,1,x", false),
        ("BTC,1,92233720368.54775807,1,x", true),
        ("BTC,1,92233720368.54775808,1,x", false),
        ("BTC,1,-92233720368.54775807,1,x", true),
        ("BTC,1,00000000000000000012.5,1,x", false),
        ("BTC,1,0000000000000000012.5,1,x", true),
        ("B\u{e9}C,1,1,1,x", true),
        ("#BTC,1,1,1,x", false),
        ("BTC#,1,1,1,x", false),
        ("\"BTC\",1,1,1,x", false),
        ("BTC,1,1,1,\"a note, with a comma\"", false),
        ("BTC,1,1,1,a note # with spaces", true),
        (
            "LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG,1,2,3,x",
            true,
        ),
        (
            "LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG,1,2,3,x,y",
            false,
        ),
        (
            "BTC,1,2,3,LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG",
            true,
        ),
        (
            "BTC,1,2,3,LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG,",
            false,
        ),
    ] {
        assert_eq!(agrees(header, line, "\n"), fast, "{line:?}");
        assert_eq!(agrees(header, line, "\r\n"), fast, "{line:?} with CRLF");
        // A line end is needed: at the end of the file, or before a lone
        // carriage return, the general path reads the line.
        assert!(!agrees(header, line, ""), "{line:?}");
        assert!(!agrees(header, line, "\r"), "{line:?}");
        // A carriage return inside the line: only an ignored last field
        // may hold it.
        agrees(header, line, "\r\r\n");
    }
    // Blank lines and comments are never rows, whatever the first column.
    for header in ["note,instrument,ts_ms,price", "instrument,ts_ms,price,size,note"] {
        for line in [
            "",
            " ",
            "\t",
            "\r",
            "# X,1,1,1",
            "#,X,1,1,1",
            " # X,1,1,1",
            "\x0bX,1,1,1",
        ] {
            let layout = layout(header);
            let mut fast = FastLayout::new(&layout).unwrap();
            let text = format!("{line}\n");
            assert!(
                parse_fast(&mut fast, &mut Symbols::default(), 1, &window(&text, b'\n')).is_none(),
                "{header}: {line:?}"
            );
        }
    }
}

#[test]
fn columns_in_any_order_and_every_epoch_unit() {
    for (header, line) in [
        (
            "ts_ns,price,instrument,size,venue",
            "1700000000000000000,65000.5,BTC-USDT,0.25,x",
        ),
        ("price,ts_ms,instrument", "3000,1700000000000,ETH-USDT"),
        ("size,instrument,price,ts_ms", ",ETH-USDT,3000,1700000000000.5"),
        ("size,instrument,price,ts_ms", "0,ETH-USDT,3000,1700000000000"),
    ] {
        assert!(agrees(header, line, "\n"), "{header}: {line}");
        assert!(agrees(header, line, "\r\n"), "{header}: {line}");
    }
    for unit in [TimeUnit::S, TimeUnit::Ms, TimeUnit::Us, TimeUnit::Ns] {
        let mapping = ColumnMapping {
            time: Some("t".into()),
            time_unit: Some(unit),
            ..Default::default()
        };
        let layout = Layout::resolve("instrument,t,price", &mapping).unwrap();
        let mut fast = FastLayout::new(&layout).unwrap();
        for time in [
            "0",
            "1",
            "1700000000",
            "1700000000.5",
            "1700000000.123",
            "17.1234567",
            "9223372036854775807",
            "1.",
        ] {
            let text = format!("X,{time},1\n");
            let slow = parse_row(&layout, &mut Symbols::default(), 2, &text.as_bytes()[..text.len() - 1]);
            if let Some((row, _)) = parse_fast(&mut fast, &mut Symbols::default(), 2, &window(&text, b'5')) {
                assert_eq!(Some(row), slow.ok(), "{unit}: {time}");
            }
        }
    }
}

#[test]
fn only_plain_trade_layouts_take_the_fast_path() {
    for (header, fast) in [
        ("instrument,ts_ms,price", true),
        ("ts_ns,price,instrument,size,venue", true),
        ("instrument,ts_ms,price,seq", false),
        ("instrument,ts_ms,price,side", false),
        ("instrument,ts_ms,kind,price", false),
        ("instrument,ts_ms,bid,ask", false),
    ] {
        assert_eq!(FastLayout::new(&layout(header)).is_some(), fast, "{header}");
    }
    let iso = ColumnMapping {
        time: Some("time".into()),
        time_unit: Some(TimeUnit::Iso),
        ..Default::default()
    };
    let layout = Layout::resolve("instrument,time,price", &iso).unwrap();
    assert!(FastLayout::new(&layout).is_none());
}

/// The fast decimal reader on `text` followed by a comma.
fn fast_decimal(text: &str) -> Option<Fixed> {
    let padded = format!("{text},");
    decimal(&window(&padded, b'9'), 0).and_then(|(value, end)| (end == text.len()).then_some(value))
}

/// Whether `text` is a plain decimal the fast path should read: at most 19
/// integer and 8 fractional digits, at least one digit, in range.
fn plain(text: &str) -> bool {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    int.len() <= 19 && frac.len() <= 8 && int.len() + frac.len() > 0 && Fixed::parse(text).is_ok()
}

proptest! {
    #[test]
    fn decimals_read_as_fixed_parse_reads_them(text in "[-+]?[0-9]{0,21}(\\.[0-9]{0,10})?") {
        match fast_decimal(&text) {
            Some(value) => prop_assert_eq!(Ok(value), Fixed::parse(&text), "{}", text),
            // Declined: the general path decides. Every plain one is read.
            None => prop_assert!(!plain(&text), "{}", text),
        }
    }

    #[test]
    fn decimals_with_any_bytes_never_disagree(text in "[-+.0-9eE ,xé]{0,12}") {
        if let Some(value) = fast_decimal(&text) {
            prop_assert_eq!(Ok(value), Fixed::parse(&text), "{}", text);
        }
    }

    #[test]
    fn epochs_read_as_the_time_unit_reads_them(text in "[0-9]{0,20}(\\.[0-9]{0,10})?", unit in 0..4usize) {
        let (unit, exp) = [(TimeUnit::S, 9), (TimeUnit::Ms, 6), (TimeUnit::Us, 3), (TimeUnit::Ns, 0)][unit];
        let padded = format!("{text},");
        if let Some((ns, end)) = epoch(&window(&padded, b'3'), 0, exp, &mut Leading::default()) {
            prop_assert_eq!(end, text.len());
            prop_assert_eq!(Ok(ns), unit.parse(&text), "{} {}", text, unit);
        } else {
            let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
            prop_assert!(
                int.is_empty() || int.len() > 18 || frac.len() > exp.min(7) || unit.parse(&text).is_err(),
                "{} {}", text, unit
            );
        }
    }
}
