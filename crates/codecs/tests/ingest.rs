//! The HTTP ingest body parsers on the bodies clients send: line protocol
//! as the InfluxDB reference writes it and Telegraf sends it, JSON in its
//! three shapes, CSV with a column mapping; bad batches refused whole with
//! every bad line named; no input makes a parser panic.

use fleetscore_codecs::{
    parse_csv_body, parse_json, parse_line_protocol, Batch, BatchError, BoolFields, Column,
    CsvBodyConfig, LineProtocolConfig, Location, Precision, MAX_REPORTED_ERRORS,
};

type Row = (i64, String, String, f64);

fn rows(b: &Batch) -> Vec<Row> {
    b.iter()
        .map(|r| (r.ts, r.device.to_string(), r.tag.to_string(), r.value))
        .collect()
}

fn lp(body: &str, cfg: &LineProtocolConfig) -> Result<Batch, BatchError> {
    parse_line_protocol(body.as_bytes(), Precision::Nanoseconds, -1, cfg)
}

fn device_tag(key: &str) -> LineProtocolConfig {
    LineProtocolConfig {
        device_tag: key.into(),
        prefix_measurement: true,
        ..Default::default()
    }
}

fn one(body: &str, cfg: &LineProtocolConfig) -> Row {
    let b = lp(body, cfg).unwrap_or_else(|e| panic!("{body}: {e}"));
    let r = rows(&b);
    assert_eq!(r.len(), 1, "{body}: {r:?}");
    r.into_iter().next().unwrap()
}

#[test]
fn line_protocol_reference_escaping_examples() {
    // Measurement with escaped spaces and commas.
    let r = one(
        r"my\ Measurement,device=d fieldKey=1",
        &device_tag("device"),
    );
    assert_eq!(r.2, "my Measurement.fieldKey");
    let r = one(r"cpu\,x,device=d f=1", &device_tag("device"));
    assert_eq!(r.2, "cpu,x.f");
    // Tag keys and values with escaped spaces, commas and equals signs.
    let r = one(
        r"m,tag\ Key1=tag\ Value1,tag\ Key2=tag\ Value2 fieldKey=100",
        &device_tag("tag Key1"),
    );
    assert_eq!((r.1.as_str(), r.3), ("tag Value1", 100.0));
    let r = one(
        r"cpu,host=server\ 01,region=us-west\,east usage=0.5",
        &device_tag("region"),
    );
    assert_eq!(r.1, "us-west,east");
    let r = one(r"m,k\=x=v\=y f=1", &device_tag("k=x"));
    assert_eq!(r.1, "v=y");
    // Field keys with escapes.
    let r = one(
        r"m,device=d field\ k\,e\=y=1",
        &LineProtocolConfig::default(),
    );
    assert_eq!(r.2, "field k,e=y");
    // Backslashes: `\\` is one backslash, a backslash before anything
    // else is itself.
    let r = one(r"m,device=a\\b\x f=1", &LineProtocolConfig::default());
    assert_eq!(r.1, r"a\b\x");
    // Emoji and the reference's "everything at once" example: quotes are
    // literal outside string fields, `"` and `\` escaped inside them.
    let r = one(
        r#""measurement\ with\ quo⚡️es\ and\ emoji",tag\ key\ with\ sp🚀ces=tag\,value\,with"commas" field_k\ey="string field value, only \" need be esc🍭ped",n=1"#,
        &device_tag("tag key with sp🚀ces"),
    );
    assert_eq!(r.1, "tag,value,with\"commas\"");
    assert_eq!(r.2, "\"measurement with quo⚡️es and emoji\".n");
    // String fields holding separators, escaped quotes and backslashes are
    // skipped whole; the numeric fields around them are kept.
    let b = lp(
        r#"m,device=d a=1,s="a \"b\", c=d e",w="C:\\Program Files\\",z=2 5"#,
        &LineProtocolConfig::default(),
    )
    .unwrap();
    assert_eq!(
        rows(&b),
        [
            (5, "d".into(), "a".into(), 1.0),
            (5, "d".into(), "z".into(), 2.0)
        ]
    );
    assert_eq!(b.skipped_strings, 2);
}

#[test]
fn telegraf_style_body() {
    let body = "\
# written by telegraf outputs.influxdb_v2
cpu,cpu=cpu0,device=host1 usage_idle=95.5,usage_user=3.2,usage_system=1.3 1700000000000000000
mem,device=host1 available=8123456789i,used_percent=42.1,free=123u 1700000000000000000

system,device=host1 load1=0.5,n_users=3i,uptime_format=\"1 day,  3:04\" 1700000000000000001
net,device=host1,interface=eth0 up=true,down=false,bytes_recv=1234i 1700000000000000002\r
cpu,cpu=cpu0,device=host2 usage_idle=-1e-3
";
    let cfg = LineProtocolConfig {
        prefix_measurement: true,
        ..Default::default()
    };
    let b = parse_line_protocol(body.as_bytes(), Precision::Nanoseconds, 42, &cfg).unwrap();
    let r = rows(&b);
    let t = 1_700_000_000_000_000_000;
    let want: Vec<Row> = [
        (t, "host1", "cpu.usage_idle", 95.5),
        (t, "host1", "cpu.usage_user", 3.2),
        (t, "host1", "cpu.usage_system", 1.3),
        (t, "host1", "mem.available", 8_123_456_789.0),
        (t, "host1", "mem.used_percent", 42.1),
        (t, "host1", "mem.free", 123.0),
        (t + 1, "host1", "system.load1", 0.5),
        (t + 1, "host1", "system.n_users", 3.0),
        (t + 2, "host1", "net.up", 1.0),
        (t + 2, "host1", "net.down", 0.0),
        (t + 2, "host1", "net.bytes_recv", 1234.0),
        (42, "host2", "cpu.usage_idle", -0.001),
    ]
    .into_iter()
    .map(|(a, b, c, d)| (a, b.to_string(), c.to_string(), d))
    .collect();
    assert_eq!(r, want);
    assert_eq!(b.skipped_strings, 1);
    assert_eq!(b.readings.key_count(), 12);

    // Without the prefix (the default) the field key alone is the tag, and
    // booleans can be skipped.
    let cfg = LineProtocolConfig {
        booleans: BoolFields::Skip,
        ..Default::default()
    };
    let b = parse_line_protocol(body.as_bytes(), Precision::Nanoseconds, 42, &cfg).unwrap();
    assert_eq!(b.readings.len(), 10);
    assert_eq!(b.skipped_bools, 2);
    assert_eq!(b.iter().next().unwrap().tag, "usage_idle");
}

#[test]
fn precision_parameter() {
    let cfg = LineProtocolConfig::default();
    let ts = |p: &str, t: &str| {
        let body = format!("m,device=d x=1 {t}");
        let p: Precision = p.parse().unwrap();
        parse_line_protocol(body.as_bytes(), p, 0, &cfg).map(|b| b.readings.ts()[0])
    };
    assert_eq!(
        ts("ns", "1535497205000000000"),
        Ok(1_535_497_205_000_000_000)
    );
    assert_eq!(
        ts("n", "1535497205000000000"),
        Ok(1_535_497_205_000_000_000)
    );
    assert_eq!(ts("us", "1535497205000000"), Ok(1_535_497_205_000_000_000));
    assert_eq!(ts("u", "1535497205000000"), Ok(1_535_497_205_000_000_000));
    assert_eq!(ts("ms", "1535497205000"), Ok(1_535_497_205_000_000_000));
    assert_eq!(ts("s", "1535497205"), Ok(1_535_497_205_000_000_000));
    assert_eq!(ts("m", "25591620"), Ok(1_535_497_200_000_000_000));
    assert_eq!(ts("h", "426527"), Ok(1_535_497_200_000_000_000));
    let e = ts("s", "9223372037").unwrap_err();
    assert_eq!(e.errors[0].at, Location::Line(1));
    assert!(e.errors[0].reason.contains("out of range"), "{e}");
    assert!(Precision::default() == Precision::Nanoseconds);
    let e = "weeks".parse::<Precision>().unwrap_err();
    assert!(e.to_string().contains("ns, us, ms or s"));
    // A line without a timestamp takes the arrival time, whatever the
    // precision.
    let b = parse_line_protocol(b"m,device=d x=1", Precision::Seconds, 99, &cfg).unwrap();
    assert_eq!(b.readings.ts(), [99]);
}

#[test]
fn mixed_batch_is_refused_whole_with_every_bad_line() {
    let body = "\
m,device=d x=1 1
m,device=d x=abc 2
m,device=d x=3 3
# a comment
m,other=d x=5 5
m,device=d x=6 6
";
    let e = lp(body, &LineProtocolConfig::default()).unwrap_err();
    assert_eq!(e.total(), 2);
    assert_eq!(e.omitted, 0);
    let got: Vec<String> = e.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        got,
        [
            "line 2: field `x` value `abc` is not a number",
            "line 5: no `device` tag: cannot tell which device this is",
        ]
    );
    let text = e.to_string();
    assert!(text.contains("nothing stored"), "{text}");
    assert!(text.contains("line 2") && text.contains("line 5"), "{text}");

    // Many bad lines: the first 100 are listed, the rest counted.
    let body = "m x=1\n".repeat(1000);
    let e = lp(&body, &LineProtocolConfig::default()).unwrap_err();
    assert_eq!(e.errors.len(), MAX_REPORTED_ERRORS);
    assert_eq!(e.errors[99].at, Location::Line(100));
    assert_eq!(e.total(), 1000);
}

#[test]
fn json_shapes_and_errors() {
    let want = vec![(
        1_535_497_205_000_000_000,
        "1".to_string(),
        "3".to_string(),
        0.5,
    )];
    for body in [
        r#"{"ts": "2018-08-28T23:00:05Z", "device": "1", "tag": "3", "value": 0.5}"#,
        r#"{"TS": "2018-08-28 23:00:05.000", "Device": 1, "Tag": 3, "Value": 0.5}"#,
        r#"  [ {"Ts": 1535497205000000000, "DEVICE": "1", "tag": "3", "value": 5e-1} ]"#,
        "\n{\"ts\": 1535497205000000000, \"device\": 1, \"tag\": 3, \"value\": 0.5}\n",
    ] {
        assert_eq!(
            rows(&parse_json(body.as_bytes(), fleetscore_core::TsUnit::Nanos).unwrap()),
            want,
            "{body}"
        );
    }
    let nd = "{\"ts\": 1, \"device\": \"a\", \"tag\": \"t\", \"value\": 1}\n{\"ts\": 2, \"device\": \"a\", \"tag\": \"t\", \"value\": 2}\r\n";
    assert_eq!(
        parse_json(nd.as_bytes(), fleetscore_core::TsUnit::Nanos)
            .unwrap()
            .readings
            .values(),
        [1.0, 2.0]
    );
    assert!(parse_json(b"[]", fleetscore_core::TsUnit::Nanos)
        .unwrap()
        .readings
        .is_empty());

    let e = parse_json(
        br#"[{"ts": 1, "device": "a", "tag": "t", "value": 1},
             {"ts": "yesterday", "device": "a", "tag": "t", "value": 1},
             {"ts": 1, "device": "a", "tag": "t"},
             {"ts": 1, "device": true, "tag": "t", "value": 1}]"#,
        fleetscore_core::TsUnit::Nanos,
    )
    .unwrap_err();
    let at: Vec<Location> = e.errors.iter().map(|e| e.at).collect();
    assert_eq!(
        at,
        [
            Location::Element(1),
            Location::Element(2),
            Location::Element(3)
        ]
    );
    assert!(e.errors[0]
        .reason
        .starts_with("field `ts`: invalid timestamp"));
    assert_eq!(e.errors[1].reason, "missing field `value`");
    assert_eq!(
        e.errors[2].reason,
        "field `device` must be a string or an integer, found a boolean"
    );

    let e = parse_json(
        b"{\"ts\": 1, \"device\": \"a\", \"tag\": \"t\", \"value\": 1}\n{\"ts\": 1, \"device\": \"a\", \"tag\": \"t\", \"value\": null}\nnot json\n",
        fleetscore_core::TsUnit::Nanos,
    )
    .unwrap_err();
    let got: Vec<String> = e.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(got[0], "line 2: field `value` must be a number, found null");
    assert!(got[1].starts_with("line 3: invalid JSON"), "{got:?}");
}

#[test]
fn csv_reference_and_mapping() {
    let b = parse_csv_body(
        b"TS,Device,Tag,Value\n2018-08-28 23:00:05.000,1,3,0.5\n2018-08-28T23:00:06Z,1,4,-2\n",
        &CsvBodyConfig::default(),
    )
    .unwrap();
    assert_eq!(
        rows(&b),
        [
            (1_535_497_205_000_000_000, "1".into(), "3".into(), 0.5),
            (1_535_497_206_000_000_000, "1".into(), "4".into(), -2.0)
        ]
    );

    // A logger's export: its own column names, one file per sensor, and a
    // `unit` column it is told to ignore (by default it would refuse the
    // body, naming the column).
    let body = b"time,station,reading,unit\n2018-08-28T23:00:05Z,s1,20.5,C\n";
    let cfg: CsvBodyConfig = serde_json::from_str(
        r#"{"ts": "time", "device": "station", "value": "reading", "fixed_tag": "temperature"}"#,
    )
    .unwrap();
    let e = parse_csv_body(body, &cfg).unwrap_err();
    assert!(
        e.errors[0]
            .to_string()
            .starts_with("line 1: column(s) `unit` (#3) are not mapped"),
        "{e}"
    );
    let cfg: CsvBodyConfig = serde_json::from_str(
        r#"{"ts": "time", "device": "station", "value": "reading", "fixed_tag": "temperature", "extra_columns": "ignore"}"#,
    )
    .unwrap();
    let body = b"time,station,reading,unit\n2018-08-28T23:00:05Z,s1,20.5,C\n2018-08-28T23:00:06Z,s2,x,C\n2018-08-28T23:00:07Z,s3\n";
    let e = parse_csv_body(body, &cfg).unwrap_err();
    let got: Vec<String> = e.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        got,
        [
            "line 3: column `reading`: `x` is not a number",
            "line 4: column `reading` is missing: the row has 2 column(s)"
        ]
    );
    let good = b"time,station,reading,unit\n2018-08-28T23:00:05Z,s1,20.5,C\n";
    let b = parse_csv_body(good, &cfg).unwrap();
    assert_eq!(
        rows(&b),
        [(
            1_535_497_205_000_000_000,
            "s1".into(),
            "temperature".into(),
            20.5
        )]
    );
    assert_eq!(cfg.tag, Column::Name("Tag".into()));
}

/// xorshift64*: a seeded, dependency-free source of test bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn check(body: &[u8]) {
    let lp_cfg = LineProtocolConfig {
        prefix_measurement: true,
        ..Default::default()
    };
    let results = [
        parse_line_protocol(body, Precision::Nanoseconds, 0, &lp_cfg),
        parse_line_protocol(body, Precision::Hours, 0, &LineProtocolConfig::default()),
        parse_json(body, fleetscore_core::TsUnit::Nanos),
        parse_csv_body(body, &CsvBodyConfig::default()),
    ];
    for r in results {
        match r {
            Ok(b) => {
                let r = &b.readings;
                assert!(r.ts().len() == r.values().len() && r.ts().len() == r.key_ids().len());
                assert!(r.key_ids().iter().all(|&k| (k as usize) < r.key_count()));
            }
            Err(e) => assert!(!e.errors.is_empty(), "{body:?}"),
        }
    }
}

#[test]
fn no_input_makes_a_parser_panic() {
    let valid: [&[u8]; 4] = [
        br#"cpu\ x,device=a\,b,t\=k=v\\ f\ 1=1.5,i=-3i,u=4u,b=t,s="q \"x\\" 1700000000000000000"#,
        b"m,device=d a=1,b=2 3\n# c\n\nm,device=e a=1e300\r\n",
        br#"[{"ts": "2018-08-28T23:00:05Z", "device": 1, "tag": "3", "value": 0.5}]"#,
        b"TS,Device,Tag,Value\n2018-08-28 23:00:05.000,1,3,0.5\n\"7\",\"a,b\",t,1\n",
    ];
    let special = b" ,=\\\"\n\r#[]{}:.-+eEiut0123456789\xff\xc3";
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..20_000 {
        let body: Vec<u8> = if round % 4 == 0 {
            (0..rng.below(120))
                .map(|_| {
                    if rng.below(2) == 0 {
                        special[rng.below(special.len())]
                    } else {
                        rng.next() as u8
                    }
                })
                .collect()
        } else {
            let mut b = valid[rng.below(valid.len())].to_vec();
            for _ in 0..=rng.below(4) {
                let at = rng.below(b.len() + 1);
                match rng.below(4) {
                    0 if at < b.len() => b[at] = special[rng.below(special.len())],
                    1 => b.insert(at, special[rng.below(special.len())]),
                    2 if at < b.len() => {
                        b.remove(at);
                    }
                    _ => b.truncate(at),
                }
            }
            b
        };
        check(&body);
    }
}
