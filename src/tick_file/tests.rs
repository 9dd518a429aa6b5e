//! Tests of the tick file reader.

use std::io::{Cursor, Write};

use super::*;
use crate::model::{Fixed, Side};

fn read(text: &str) -> Vec<Result<TickRecord, String>> {
    TickReader::new(Cursor::new(text.as_bytes().to_vec()))
        .expect("header")
        .map(|r| r.map_err(|e| e.to_string()))
        .collect()
}

fn px(s: &str) -> Fixed {
    Fixed::parse(s).unwrap()
}

fn trade(price: &str, size: &str) -> TickValues {
    TickValues::Trade {
        price: px(price),
        size: px(size),
        side: None,
    }
}

#[test]
fn reads_the_minimal_format_numbering_each_instrument() {
    let rows = read(
        "instrument,ts_ms,price,size\n\
         BTC-USDT,1700000000000,65000.5,0.25\n\
         ETH-USDT,1700000000001,3000,1\n\
         BTC-USDT,1700000000002.5,64999,0\n",
    );
    let rows: Vec<TickRecord> = rows.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(&*rows[0].instrument, "BTC-USDT");
    assert_eq!(rows[0].line, 2);
    assert_eq!(rows[0].event_time_ns, 1_700_000_000_000_000_000);
    assert_eq!(rows[0].values, trade("65000.5", "0.25"));
    assert_eq!((rows[0].seq, rows[1].seq, rows[2].seq), (1, 1, 2));
    assert_eq!(rows[2].event_time_ns, 1_700_000_000_002_500_000);
    assert!(
        Arc::ptr_eq(&rows[0].instrument, &rows[2].instrument),
        "symbols are interned"
    );
}

#[test]
fn maps_columns_by_header_name_in_any_order() {
    let rows = read(
        "# exported by a venue\n\
         \n\
         size, price ,trade_id,seq,instrument,ts_ns\r\n\
         2,100.1,abc,41,X,5\r\n\
         3,100.2,abd,45,X,6\r\n",
    );
    let rows: Vec<TickRecord> = rows.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(rows[0].seq, 41);
    assert_eq!(rows[1].seq, 45);
    assert_eq!(rows[0].event_time_ns, 5);
    assert_eq!(rows[1].values, trade("100.2", "3"));
    assert_eq!(rows[1].line, 5);
}

#[test]
fn reads_quotes_marks_and_sides() {
    let rows = read(
        "kind,instrument,ts_ms,price,size,side,bid,ask,bid_size,ask_size\n\
         quote,X,1,,,,99.5,100.5,3,4\n\
         mark,X,2,100,,,,,,\n\
         ,X,3,100,1,sell,,,,\n\
         index,X,4,101,,,,,,\n",
    );
    let rows: Vec<TickRecord> = rows.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(
        rows[0].values,
        TickValues::Quote {
            bid: px("99.5"),
            ask: px("100.5"),
            bid_size: px("3"),
            ask_size: px("4"),
        }
    );
    assert_eq!(rows[1].values, TickValues::Mark { price: px("100") });
    assert_eq!(
        rows[2].values,
        TickValues::Trade {
            price: px("100"),
            size: px("1"),
            side: Some(Side::Sell)
        }
    );
    assert_eq!(rows[3].kind(), TickKind::Index);
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
}

#[test]
fn bad_rows_name_their_line_and_reading_goes_on() {
    let rows = read(
        "instrument,ts_ms,price,size\n\
         X,1,NaN,1\n\
         X,2,inf,1\n\
         X,3,1e5,1\n\
         X,4,100\n\
         ,5,100,1\n\
         X,soon,100,1\n\
         X,6,0.000000001,1\n\
         X,7,100,1\n",
    );
    let errors: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.as_ref().err().map(String::as_str))
        .collect();
    assert_eq!(
        errors,
        [
            "line 2: price: not a finite decimal number",
            "line 3: price: not a finite decimal number",
            "line 4: price: not a finite decimal number",
            "line 5: expected 4 fields as in the header, found 3",
            "line 6: instrument is empty",
            "line 7: ts_ms: `soon` is not a time (expected epoch milliseconds such as 1700000000000 or 1700000000000.25)",
            "line 8: price: has more than 8 decimal places",
        ]
    );
    let good = rows.last().unwrap().as_ref().unwrap();
    assert_eq!((good.line, good.seq), (9, 1), "bad rows take no sequence number");
}

#[test]
fn rows_missing_what_their_kind_needs_are_refused() {
    let rows = read(
        "instrument,ts_ms,kind,price,bid\n\
         X,1,quote,,100\n\
         X,2,trade,,\n\
         X,3,candle,1,\n\
         X,4,trade,-5,\n",
    );
    let errors: Vec<String> = rows
        .into_iter()
        .map(|r| r.map(|t| t.seq.to_string()).unwrap_or_else(|e| e))
        .collect();
    assert_eq!(
        errors,
        [
            "line 2: a quote row needs a `ask` value",
            "line 3: a trade row needs a `price` value",
            "line 4: kind: `candle` is not one of trade, quote, mark, index",
            // Syntax only: a negative price is the server's to refuse.
            "1",
        ]
    );
}

#[test]
fn bad_headers_are_fatal() {
    let err = |text: &str| {
        TickReader::new(Cursor::new(text.as_bytes().to_vec()))
            .err()
            .map(|e| (e.is_fatal(), e.to_string()))
    };
    assert_eq!(
        err("# only a comment\n"),
        Some((
            true,
            "line 1: the file has no header row (expected columns such as `instrument,ts_ms,price,size`)".into()
        ))
    );
    assert_eq!(
        err("instrument,price\n"),
        Some((true, "line 1: the header has no `ts_ms` column".into()))
    );
    assert_eq!(
        err("instrument,ts_ms,size\n"),
        Some((true, "line 1: the header has no `price` column".into()))
    );
    assert_eq!(
        err("\ninstrument,ts_ms,price,price\n"),
        Some((true, "line 2: column `price` appears twice in the header".into()))
    );
    assert_eq!(
        err("instrument,ts_ms,ts_ns,price\n"),
        Some((true, "line 1: the header has both `ts_ms` and `ts_ns`; give one".into()))
    );
}

#[test]
fn over_long_lines_are_skipped() {
    let mut text = String::from("instrument,ts_ms,price\n");
    text.push_str(&"X".repeat(MAX_LINE_BYTES + 10));
    text.push_str("\nY,1,2\n");
    let rows = read(&text);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0].as_ref().unwrap_err(),
        "line 2: the line is longer than 65536 bytes"
    );
    assert_eq!(rows[1].as_ref().unwrap().line, 3);
}

#[test]
fn opens_plain_and_gzip_files() {
    let dir = tempfile::tempdir().unwrap();
    let text = "instrument,ts_ms,price,size\nBTC-USDT,1700000000000,65000,1\nBTC-USDT,1700000000001,64000,1\n";
    let plain = dir.path().join("ticks.csv");
    std::fs::write(&plain, text).unwrap();
    let gz = dir.path().join("ticks.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap();

    let a: Vec<TickRecord> = TickReader::open(&plain).unwrap().map(Result::unwrap).collect();
    let b: Vec<TickRecord> = TickReader::open(&gz).unwrap().map(Result::unwrap).collect();
    assert_eq!(a.len(), 2);
    assert_eq!(a, b);
    assert_eq!(b[1].seq, 2);

    let missing = TickReader::open(&dir.path().join("nope.csv")).err().unwrap();
    assert_eq!(missing.line, 0);
    assert!(missing.is_fatal());
}

fn read_mapped(text: &str, mapping: &ColumnMapping) -> Vec<Result<TickRecord, String>> {
    TickReader::with_mapping(Cursor::new(text.as_bytes().to_vec()), mapping)
        .expect("header")
        .map(|r| r.map_err(|e| e.to_string()))
        .collect()
}

#[test]
fn binance_trades_read_with_a_fixed_symbol_and_renamed_columns() {
    let mapping = ColumnMapping {
        symbol: Some("BTC-USDT".into()),
        time: Some("trade_time_ms".into()),
        seq: Some("trade_id".into()),
        size: Some("qty".into()),
        buyer_maker: Some("is_buyer_maker".into()),
        ..Default::default()
    };
    let rows = read_mapped(
        "local_ts_ns,event_time_ms,trade_time_ms,trade_id,price,qty,is_buyer_maker\n\
         1723161254087896568,1723161255343,1723161255342,3735683259,61837.63000000,0.02000000,1\n\
         1723161254347673567,1723161255619,1723161255617,3735683260,61837.64000000,0.04800000,0\n\
         1723161254347673567,1723161255619,1723161255617,3735683261,61837.64000000,-,x\n",
        &mapping,
    );
    let first = rows[0].as_ref().unwrap();
    assert_eq!(&*first.instrument, "BTC-USDT");
    assert_eq!(first.event_time_ns, 1_723_161_255_342_000_000);
    assert_eq!(first.seq, 3_735_683_259);
    assert_eq!(
        first.values,
        TickValues::Trade {
            price: px("61837.63"),
            size: px("0.02"),
            side: Some(Side::Sell),
        }
    );
    assert!(matches!(
        rows[1].as_ref().unwrap().values,
        TickValues::Trade {
            side: Some(Side::Buy),
            ..
        }
    ));
    assert_eq!(
        rows[2].as_ref().unwrap_err(),
        "line 4: qty: not a finite decimal number"
    );
}

#[test]
fn iso_times_and_book_tickers() {
    let mapping = ColumnMapping {
        symbol: Some("ATOM-USDT".into()),
        time: Some("time_utc".into()),
        seq: Some("aggregate_trade_id".into()),
        size: Some("quantity_atom".into()),
        ..Default::default()
    };
    let rows = read_mapped(
        "aggregate_trade_id,price,quantity_atom,first_trade_id,last_trade_id,time_utc,buyer_is_maker\n\
         176299337,1.688,78.85,254107861,254107861,2025-10-10T21:20:37.689043Z,True\n\
         176299338,1.673,152.42,254107862,254107862,2025-10-10T21:20:37.68904Z,True\n",
        &mapping,
    );
    assert_eq!(rows[0].as_ref().unwrap().event_time_ns, 1_760_131_237_689_043_000);
    assert_eq!(rows[1].as_ref().unwrap().event_time_ns, 1_760_131_237_689_040_000);

    let book = ColumnMapping {
        symbol: Some("BTC-USDT".into()),
        time: Some("local_ts_ns".into()),
        time_unit: Some(TimeUnit::Ns),
        seq: Some("update_id".into()),
        bid: Some("bid_px".into()),
        ask: Some("ask_px".into()),
        bid_size: Some("bid_qty".into()),
        ask_size: Some("ask_qty".into()),
        ..Default::default()
    };
    let rows = read_mapped(
        "local_ts_ns,event_time_ms,txn_time_ms,update_id,bid_px,bid_qty,ask_px,ask_qty\n\
         1723161254087891268,,,50093239212,61837.63000000,3.78826000,61837.64000000,1.54698000\n\
         1723161254116723068,,,50093239219,61837.63000000,3.78826000,,1.60520000\n",
        &book,
    );
    assert_eq!(
        rows[0].as_ref().unwrap().values,
        TickValues::Quote {
            bid: px("61837.63"),
            ask: px("61837.64"),
            bid_size: px("3.78826"),
            ask_size: px("1.54698"),
        }
    );
    assert_eq!(
        rows[1].as_ref().unwrap_err(),
        "line 3: a quote row needs a `ask_px` value"
    );
}

#[test]
fn iso_times_read_offsets_and_fractions_and_name_bad_dates() {
    let mapping = ColumnMapping {
        time: Some("at".into()),
        time_unit: Some(TimeUnit::Iso),
        ..Default::default()
    };
    let rows = read_mapped(
        "instrument,at,price\n\
         X,2024-02-29T05:30:00+05:30,1\n\
         X,2024-02-29T05:30:00.123456789+05:30,1\n\
         X,2024-02-29T00:00:00.25Z,1\n\
         X,2024-02-30T00:00:00Z,1\n\
         X,2023-02-29T00:00:00.5Z,1\n\
         X,2024-02-29T00:00:00.0000000001Z,1\n\
         X,2024-02-29,1\n",
        &mapping,
    );
    let leap_day = 1_709_164_800_000_000_000;
    let times: Vec<i64> = rows[..3].iter().map(|r| r.as_ref().unwrap().event_time_ns).collect();
    assert_eq!(times, [leap_day, leap_day + 123_456_789, leap_day + 250_000_000]);
    let errors: Vec<&str> = rows[3..].iter().map(|r| r.as_ref().unwrap_err().as_str()).collect();
    for (error, line) in errors.iter().zip(5..) {
        assert!(error.starts_with(&format!("line {line}: at: `")), "{error}");
    }
    assert!(
        errors[0].contains("`2024-02-30T00:00:00Z` is not a time (not ISO-8601: "),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("day"), "{}", errors[0]);
    assert!(errors[1].contains("day"), "{}", errors[1]);
    assert!(
        errors[2].ends_with("is not a time (finer than a nanosecond)"),
        "{}",
        errors[2]
    );
    assert!(
        errors[3].ends_with("is not a time (not ISO-8601: a date without a time of day)"),
        "{}",
        errors[3]
    );
}

#[test]
fn rows_give_instrument_indexes_in_order_of_first_sight() {
    let mut reader = TickReader::new(Cursor::new(b"instrument,ts_ms,price\nB,1,1\nA,2,1\nB,3,1\n".to_vec())).unwrap();
    let rows: Vec<TickRow> = std::iter::from_fn(|| reader.next_row()).map(Result::unwrap).collect();
    assert_eq!(rows.iter().map(|r| r.instrument).collect::<Vec<_>>(), [0, 1, 0]);
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 1, 2]);
    assert_eq!(reader.symbol(1).map(|s| &**s), Some("A"));
    assert!(!reader.has_seq());
}

/// Hands out a few bytes per read, so lines straddle reads.
struct Trickle(Cursor<Vec<u8>>);

impl std::io::Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(4093);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn rows_across_read_blocks_and_batches_match_row_by_row() {
    let mut text = String::from("instrument,ts_ms,price,size\n");
    for i in 0..60_000u64 {
        match i % 1000 {
            7 => text.push_str("# a comment\n\n"),
            8 => text.push_str(&format!("X{},{},oops,1\n", i % 13, i)),
            9 => text.push_str(&format!(" X{} , {} , 1.5 ,\r\n", i % 13, i)),
            _ => text.push_str(&format!("X{},{},{}.25,{}\n", i % 13, i, i % 97 + 1, i % 5)),
        }
    }
    text.push_str("Y,1,2,3");
    let one_by_one: Vec<_> = {
        let mut reader = TickReader::new(Cursor::new(text.clone().into_bytes())).unwrap();
        std::iter::from_fn(|| reader.next_row())
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    };
    assert_eq!(one_by_one.len(), 60_000 - 60 + 1);
    assert_eq!(one_by_one.iter().filter(|r| r.is_err()).count(), 60);
    let mut reader = TickReader::new(std::io::BufReader::new(Trickle(Cursor::new(text.into_bytes())))).unwrap();
    let mut batched = Vec::new();
    loop {
        let mut rows = Vec::new();
        let error = reader.read_rows(&mut rows, 333);
        let short = rows.len() < 333;
        batched.extend(rows.into_iter().map(Ok));
        match error {
            Some(e) => batched.push(Err(e.to_string())),
            None if short => break,
            None => {}
        }
    }
    assert_eq!(batched, one_by_one);
}

/// Fields of every shape the fast path reads or must decline.
const SYMBOLS: &[&str] = &[
    "BTC-USDT",
    "SYN0166-USDT",
    "FIFTEEN-BYTES-X",
    "A-VERY-LONG-INSTRUMENT-NAME-SWAP",
    "ETH",
    " ETH",
    "ETH ",
    "",
    "B\u{e9}C",
    "#X",
    "\"X\"",
];
const TIMES: &[&str] = &[
    "1700000000000",
    "1700000000001.5",
    "1700000000002.123456",
    "1700000000002.1234567",
    "",
    "-1",
    "17e3",
    " 1700000000003",
    "99999999999999999999",
];
const DECIMALS: &[&str] = &[
    "65000.5",
    "0.25",
    "3000",
    "0",
    "-0",
    "-12.5",
    "+7",
    ".5",
    "7.",
    "0.12345678",
    "0.123456789",
    "0.123456780",
    "92233720368.54775807",
    "92233720368.54775808",
    "",
    ".",
    "-",
    "1e5",
    "NaN",
    " 2",
    "1.2.3",
    "0000000000000000000001",
];

/// A seeded file of `rows` lines mixing good rows, bad rows, blank lines,
/// comments, CRLF and whitespace, with no line end at the very end.
fn mixed_file(header: &str, rows: usize, seed: u64) -> String {
    let mut state = seed;
    let mut next = |n: usize| {
        // SplitMix64.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    };
    let columns: Vec<&str> = header.split(',').collect();
    let mut text = format!("{header}\n");
    for _ in 0..rows {
        // Mostly plain rows, so that the fast path is exercised in runs.
        let odd = next(4) == 0;
        let fields: Vec<String> = columns
            .iter()
            .map(|column| {
                let pick = |list: &[&str], next: &mut dyn FnMut(usize) -> usize| {
                    let n = if odd { list.len() } else { 3 };
                    list[next(n)].to_string()
                };
                match *column {
                    "instrument" => pick(SYMBOLS, &mut next),
                    "ts_ms" => pick(TIMES, &mut next),
                    "price" | "size" => pick(DECIMALS, &mut next),
                    _ => ["x", "", "a b", "#"][next(4)].to_string(),
                }
            })
            .collect();
        let mut line = fields.join(",");
        if odd && next(8) == 0 {
            line.push(',');
        }
        text.push_str(&line);
        text.push_str(["\n", "\n", "\r\n", "\n\n", "\n# a comment\n", "\n  \n"][next(6)]);
    }
    text.push_str("BTC-USDT,1700000000009,1,2");
    text
}

/// Every row and error of `text`, read row by row, with or without the
/// fast path, and how many rows the fast path read.
fn all_rows(text: &str, fast: bool) -> (Vec<Result<TickRow, String>>, u64) {
    let mut reader = TickReader::new(Cursor::new(text.as_bytes().to_vec())).unwrap();
    if !fast {
        reader.fast = None;
    }
    let rows: Vec<_> = std::iter::from_fn(|| reader.next_row())
        .map(|r| r.map_err(|e| e.to_string()))
        .collect();
    let symbols: Vec<&str> = (0..reader.instrument_count() as u32)
        .map(|i| &**reader.symbol(i).unwrap())
        .collect();
    assert!(symbols.iter().all(|s| !s.is_empty()));
    (rows, reader.fast_rows)
}

#[test]
fn the_fast_path_reads_every_file_as_the_general_path_does() {
    for (i, header) in [
        "instrument,ts_ms,price,size",
        "instrument,ts_ms,price",
        "note,instrument,ts_ms,price,size",
        "size,price,ts_ms,instrument",
        "instrument,ts_ms,price,size,note",
    ]
    .iter()
    .enumerate()
    {
        let text = mixed_file(header, 20_000, i as u64);
        let (fast, fast_rows) = all_rows(&text, true);
        let (general, none) = all_rows(&text, false);
        assert_eq!(none, 0);
        // A row after a blank line or a comment is read by the general
        // path (which skips those lines), as are a quarter of odd rows.
        assert!(
            fast_rows as usize > fast.len() / 4,
            "{header}: {fast_rows} of {} fast",
            fast.len()
        );
        assert_eq!(fast.len(), general.len(), "{header}");
        for (a, b) in fast.iter().zip(&general) {
            assert_eq!(a, b, "{header}");
        }
        let bad = fast.iter().filter(|r| r.is_err()).count();
        assert!(bad > 500 && bad < fast.len() / 2, "{header}: {bad} bad rows");
    }
}

#[test]
fn crlf_files_blank_lines_and_a_last_line_without_end() {
    let rows = read(
        "instrument,ts_ms,price,size\r\n\
         \r\n\
         BTC-USDT,1700000000000,65000.5,0.25\r\n\
         \r\n\
         # a comment\r\n\
         ETH-USDT,1700000000001,-3000,0\r\n\
         ETH-USDT,1700000000002,0,\r\n\
         ETH-USDT,1700000000003,0.123456789,1\r\n\
         BTC-USDT,1700000000004,65001,1",
    );
    let rows: Vec<Result<(u64, i64, TickValues), String>> = rows
        .into_iter()
        .map(|r| r.map(|t| (t.line, t.event_time_ns / 1_000_000, t.values)))
        .collect();
    assert_eq!(
        rows,
        [
            Ok((3, 1_700_000_000_000, trade("65000.5", "0.25"))),
            Ok((6, 1_700_000_000_001, trade("-3000", "0"))),
            Ok((7, 1_700_000_000_002, trade("0", "0"))),
            Err("line 8: price: has more than 8 decimal places".into()),
            Ok((9, 1_700_000_000_004, trade("65001", "1"))),
        ]
    );
}

#[test]
fn a_long_file_is_read_fast_with_its_errors_in_place() {
    // Enough rows for many fast-path windows and block refills.
    let mut text = String::from("instrument,ts_ms,price,size\n");
    for i in 0..100_000u64 {
        if i % 9_999 == 5 {
            text.push_str(&format!("X{},{},1.000000001,1\n", i % 7, i));
        } else {
            text.push_str(&format!("X{},{},{}.{:02},{}\n", i % 7, i, i % 1000, i % 100, i % 3));
        }
    }
    let mut reader = TickReader::new(Cursor::new(text.into_bytes())).unwrap();
    let rows: Vec<_> = reader.by_ref().map(|r| r.map_err(|e| e.to_string())).collect();
    assert!(reader.fast_rows > 99_000, "{}", reader.fast_rows);
    assert_eq!(rows.len(), 100_000);
    let errors: Vec<&String> = rows.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(errors.len(), 11);
    assert_eq!(errors[0], "line 7: price: has more than 8 decimal places");
    let last = rows.last().unwrap().as_ref().unwrap();
    assert_eq!((last.line, last.seq), (100_001, 14_284));
    assert_eq!(last.values, trade("999.99", "0"));
}

#[test]
fn rows_can_go_unnumbered_and_keep_their_own_sequence_numbers() {
    // Long enough for the fast path, with rows for the general path too.
    let mut text = String::from("instrument,ts_ms,price\n");
    for i in 0..50 {
        text.push_str(&format!("X{},{i},1\n Y ,{i},2\n", i % 3));
    }
    let mut reader = TickReader::new(Cursor::new(text.into_bytes())).unwrap();
    let first = reader.next_row().unwrap().unwrap();
    assert_eq!(first.seq, 1);
    reader.skip_numbering();
    let rest: Vec<TickRow> = std::iter::from_fn(|| reader.next_row()).map(Result::unwrap).collect();
    assert_eq!(rest.len(), 99);
    assert!(rest.iter().all(|r| r.seq == 0));
    assert!(reader.fast_rows > 20, "{}", reader.fast_rows);

    let mut reader = TickReader::new(Cursor::new(b"instrument,ts_ms,price,seq\nX,1,1,7\nX,2,1,9\n".to_vec())).unwrap();
    reader.skip_numbering();
    let seqs: Vec<u64> = std::iter::from_fn(|| reader.next_row())
        .map(|r| r.unwrap().seq)
        .collect();
    assert_eq!(seqs, [7, 9]);
}
