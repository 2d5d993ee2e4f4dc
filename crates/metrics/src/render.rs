use std::fmt::Write as _;

use crate::histogram::lock;
use crate::registry::{Labels, Registry, Series};

impl Registry {
    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, family) in families.iter() {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
            for (labels, series) in &family.series {
                match series {
                    Series::Scalar(v) => {
                        let _ =
                            writeln!(out, "{name}{} {}", format_labels(labels, None), number(*v));
                    }
                    Series::Histogram(h) => {
                        let h = lock(h);
                        for (count, bound) in h.counts.iter().zip(family.buckets.bounds) {
                            let le = number(*bound);
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {count}",
                                format_labels(labels, Some(&le))
                            );
                        }
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {}",
                            format_labels(labels, Some("+Inf")),
                            h.count
                        );
                        let _ = writeln!(
                            out,
                            "{name}_sum{} {}",
                            format_labels(labels, None),
                            number(h.sum)
                        );
                        let _ = writeln!(
                            out,
                            "{name}_count{} {}",
                            format_labels(labels, None),
                            h.count
                        );
                    }
                }
            }
        }
        out
    }
}

fn format_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_value(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use crate::{Buckets, MetricError, Registry};

    #[test]
    fn a_handle_observes_the_series_the_registry_renders() {
        let r = Registry::new();
        let labels = [("m", "a")];
        let handle = r
            .histogram("h", "H.", Buckets::prometheus(&[1.0, 2.0]), &labels)
            .unwrap();
        // A handle's series exists before its first observation.
        assert!(
            r.render().contains("h_count{m=\"a\"} 0\n"),
            "{}",
            r.render()
        );
        handle.observe(1.0).unwrap();
        r.observe_in("h", "H.", &[1.0, 2.0], &labels, 1.5).unwrap();
        // Another handle to the same series shares it, with the buckets it was created with.
        let again = r
            .histogram("h", "", Buckets::tensorflow(&[5.0]), &labels)
            .unwrap();
        again.observe(2.0).unwrap();
        let text = r.render();
        for line in [
            "h_bucket{m=\"a\",le=\"1\"} 1\n",
            "h_bucket{m=\"a\",le=\"2\"} 3\n",
            "h_bucket{m=\"a\",le=\"+Inf\"} 3\nh_sum{m=\"a\"} 4.5\nh_count{m=\"a\"} 3\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert_eq!(r.value("h", &labels), Some(3.0));
        assert!(matches!(
            handle.observe(f64::INFINITY),
            Err(MetricError::NotFinite(_))
        ));
        r.counter_add("c", "", &[], 1.0).unwrap();
        assert!(matches!(
            r.histogram("c", "", Buckets::prometheus(&[1.0]), &[]),
            Err(MetricError::KindConflict { .. })
        ));
    }

    #[test]
    fn tensorflow_buckets_count_a_value_on_a_bound_in_the_bucket_above() {
        let r = Registry::new();
        let bounds: &[f64] = &[1.0, 2.0, 4.0];
        let prometheus = r
            .histogram("p", "", Buckets::prometheus(bounds), &[])
            .unwrap();
        let tensorflow = r
            .histogram("t", "", Buckets::tensorflow(bounds), &[])
            .unwrap();
        for value in [1.0, 2.0, 3.0] {
            prometheus.observe(value).unwrap();
            tensorflow.observe(value).unwrap();
        }
        let text = r.render();
        for line in [
            "p_bucket{le=\"1\"} 1\np_bucket{le=\"2\"} 2\np_bucket{le=\"4\"} 3\n",
            "t_bucket{le=\"1\"} 0\nt_bucket{le=\"2\"} 1\nt_bucket{le=\"4\"} 3\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let r = Registry::new();
        r.counter_add(
            "requests_total",
            "Requests.",
            &[("status", "completed")],
            2.0,
        )
        .unwrap();
        r.gauge_set("queue_length", "Queued.", &[("api_name", "iris")], 3.0)
            .unwrap();
        r.observe("latency_seconds", "Latency.", &[], 0.003)
            .unwrap();
        let text = r.render();
        assert!(
            text.contains(
                "# TYPE requests_total counter\nrequests_total{status=\"completed\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("queue_length{api_name=\"iris\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("latency_seconds_bucket{le=\"0.0025\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("latency_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("latency_seconds_bucket{le=\"+Inf\"} 1\nlatency_seconds_sum 0.003\nlatency_seconds_count 1\n"), "{text}");
    }

    #[test]
    fn observations_recorded_together_render_as_one_by_one() {
        let (together, one_by_one) = (Registry::new(), Registry::new());
        let waits = [0.0001, 0.003, 0.003, 0.7, 20.0];
        together
            .observe_all_in("w", "Wait.", crate::DEFAULT_BUCKETS, &[("m", "a")], &waits)
            .unwrap();
        for wait in waits {
            one_by_one
                .observe("w", "Wait.", &[("m", "a")], wait)
                .unwrap();
        }
        assert_eq!(together.render(), one_by_one.render());
        assert!(together.render().contains("w_count{m=\"a\"} 5\n"));
        // One value that is not finite refuses them all.
        assert!(matches!(
            together.observe_all_in(
                "w",
                "",
                crate::DEFAULT_BUCKETS,
                &[("m", "a")],
                &[1.0, f64::NAN]
            ),
            Err(MetricError::NotFinite(_))
        ));
        assert_eq!(together.render(), one_by_one.render());
    }

    #[test]
    fn rejects_bad_names_kinds_and_values() {
        let r = Registry::new();
        assert!(matches!(
            r.gauge_set("9lives", "", &[], 1.0),
            Err(MetricError::InvalidName(_))
        ));
        assert!(matches!(
            r.gauge_set("ok", "", &[("bad-label", "x")], 1.0),
            Err(MetricError::InvalidLabel(_))
        ));
        r.gauge_set("g", "", &[], 1.0).unwrap();
        assert!(matches!(
            r.counter_add("g", "", &[], 1.0),
            Err(MetricError::KindConflict { .. })
        ));
        assert!(matches!(
            r.counter_add("c", "", &[], -1.0),
            Err(MetricError::NegativeCounter(_))
        ));
        assert!(matches!(
            r.gauge_set("n", "", &[], f64::NAN),
            Err(MetricError::NotFinite(_))
        ));
        assert!(matches!(
            r.gauge_set("d", "", &[("a", "1"), ("a", "2")], 1.0),
            Err(MetricError::DuplicateLabel(_))
        ));
        // The same labels twice are refused on an existing family too, and do not match its
        // series with those labels once each.
        r.gauge_set("d", "", &[("a", "1"), ("b", "2")], 1.0)
            .unwrap();
        assert!(matches!(
            r.gauge_set("d", "", &[("a", "1"), ("a", "1")], 1.0),
            Err(MetricError::DuplicateLabel(_))
        ));
        // A rejected update leaves nothing behind: no family, no series.
        let text = r.render();
        assert!(!text.contains("# TYPE ok"), "{text}");
        assert!(!text.contains("# TYPE 9lives"), "{text}");
        assert!(text.contains("d{a=\"1\",b=\"2\"} 1\n"), "{text}");
        assert_eq!(text.matches("\nd{").count(), 1, "{text}");
    }

    /// What would make Prometheus refuse the whole page is refused instead: `le` on a
    /// histogram (twice on each bucket line), and a family whose series share a name with
    /// a histogram's `_bucket` / `_sum` / `_count`, in either order.
    #[test]
    fn rejects_what_would_spoil_the_page() {
        let r = Registry::new();
        assert!(matches!(
            r.observe("h", "", &[("le", "x")], 0.5),
            Err(MetricError::BucketLabel(_))
        ));
        r.observe("h", "", &[("a", "1")], 0.5).unwrap();
        assert!(matches!(
            r.observe("h", "", &[("le", "x")], 0.5),
            Err(MetricError::BucketLabel(_))
        ));
        r.gauge_set("g", "", &[("le", "x")], 1.0).unwrap();
        for name in ["h_bucket", "h_sum", "h_count"] {
            assert!(matches!(
                r.gauge_set(name, "", &[], 1.0),
                Err(MetricError::SeriesClash { .. })
            ));
        }
        r.counter_add("later_count", "", &[], 1.0).unwrap();
        let err = r.observe("later", "", &[], 1.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "metric \"later_count\" would clash with the \"later_count\" series of histogram \"later\""
        );
        let text = r.render();
        assert!(!text.contains("# TYPE h_count"), "{text}");
        assert!(!text.contains("# TYPE later "), "{text}");
    }

    #[test]
    fn label_values_are_escaped_and_order_independent() {
        let r = Registry::new();
        r.counter_add("c", "", &[("b", "x\"y"), ("a", "1")], 1.0)
            .unwrap();
        r.counter_add("c", "", &[("a", "1"), ("b", "x\"y")], 1.0)
            .unwrap();
        assert!(r.render().contains("c{a=\"1\",b=\"x\\\"y\"} 2\n"));
        assert_eq!(r.value("c", &[("a", "1"), ("b", "x\"y")]), Some(2.0));
    }

    #[test]
    fn series_are_found_in_families_small_and_large() {
        let r = Registry::new();
        // Past the size where a family is scanned, series are looked up by their sorted key.
        for round in 1..=2 {
            for i in 0..100 {
                let i = i.to_string();
                if round == 1 {
                    r.counter_add("c", "", &[("model", "m"), ("id", &i)], 1.0)
                        .unwrap();
                } else {
                    r.counter_add("c", "", &[("id", &i), ("model", "m")], 1.0)
                        .unwrap();
                }
            }
        }
        for i in [0, 31, 32, 99] {
            let i = i.to_string();
            assert_eq!(r.value("c", &[("model", "m"), ("id", &i)]), Some(2.0));
        }
        // A subset or superset of a series' labels is another series.
        r.counter_add("s", "", &[("a", "1"), ("b", "2")], 1.0)
            .unwrap();
        r.counter_add("s", "", &[("a", "1")], 1.0).unwrap();
        r.counter_add("s", "", &[("a", "1"), ("b", "2"), ("c", "3")], 1.0)
            .unwrap();
        assert_eq!(r.value("s", &[("b", "2"), ("a", "1")]), Some(1.0));
        assert_eq!(r.value("s", &[("a", "1")]), Some(1.0));
    }
}
