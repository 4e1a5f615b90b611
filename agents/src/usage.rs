//! Adding up what a task cost across its model calls and subtasks.

use hearth_proto::v1::Usage;

/// Adds `b` into `a`: tokens, calls, FLOPs, energy and dollars sum; the
/// time to first token of the first call is kept. Latency is the caller's to
/// set (it is wall time, not a sum). A figure unmeasured on either side stays
/// unmeasured.
pub fn add(a: &mut Usage, b: &Usage) {
    if a.calls == 0 {
        a.ttft_ms = b.ttft_ms;
        a.model.clone_from(&b.model);
        a.backend = b.backend;
        a.flops = b.flops;
        a.energy_joules = b.energy_joules;
        a.cost_usd = b.cost_usd;
        a.energy_meter = b.energy_meter;
        a.unmeasured.clone_from(&b.unmeasured);
    } else {
        a.flops = a.flops.zip(b.flops).map(|(x, y)| x + y);
        a.energy_joules = a.energy_joules.zip(b.energy_joules).map(|(x, y)| x + y);
        a.cost_usd = a.cost_usd.zip(b.cost_usd).map(|(x, y)| x + y);
        if a.unmeasured.is_empty() {
            a.unmeasured.clone_from(&b.unmeasured);
        }
        if a.energy_meter != b.energy_meter {
            a.energy_meter = hearth_proto::v1::EnergyMeter::Unspecified.into();
        }
    }
    for r in b.route.split("; ").filter(|r| !r.is_empty()) {
        if !a.route.split("; ").any(|x| x == r) {
            if !a.route.is_empty() {
                a.route.push_str("; ");
            }
            a.route.push_str(r);
        }
    }
    a.sensitive |= b.sensitive;
    a.tokens_in += b.tokens_in;
    a.tokens_cached += b.tokens_cached;
    a.tokens_out += b.tokens_out;
    a.calls += b.calls.max(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_tokens_and_keeps_unmeasured_as_unmeasured() {
        let mut total = Usage::default();
        add(
            &mut total,
            &Usage {
                tokens_in: 10,
                tokens_out: 2,
                ttft_ms: 5.0,
                calls: 1,
                flops: Some(1.0),
                ..Default::default()
            },
        );
        add(
            &mut total,
            &Usage {
                tokens_in: 3,
                tokens_out: 4,
                ttft_ms: 9.0,
                calls: 1,
                flops: None,
                ..Default::default()
            },
        );
        assert_eq!((total.tokens_in, total.tokens_out, total.calls), (13, 6, 2));
        assert_eq!(total.ttft_ms, 5.0);
        assert_eq!(total.flops, None);
    }
}
