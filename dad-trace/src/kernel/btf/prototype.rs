//! Whether the kernel still hands each hook what its program reads: for a kprobe, that the
//! argument at the table's index is a `struct inet6_ifaddr *` (a kretprobe: the return
//! value); for a tracepoint, that its argument is a `struct work_struct *`. A kernel that
//! reorders or retypes an argument would otherwise have the program read garbage, quietly.
//! Checked from the kernel's BTF, where kunai checks its probes against kernel sources.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use super::raw::{Btf, Kind};
use crate::kernel::probes::{HookDef, Source};

/// What the kernel's BTF says of one hook's target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prototype {
    /// The argument (or return value) is the pointer the program reads.
    Matches,
    /// BTF cannot tell (the function was inlined or is absent, the kernel names no
    /// `btf_trace_*` type for the tracepoint): nothing to check against.
    Unknown(String),
    /// It changed: how, naming the function.
    Changed(String),
}

/// The BTF type whose prototype `def`'s target has: the function, or the tracepoint's
/// `btf_trace_<target>` typedef (whose first parameter is the tracepoint's private data).
#[must_use]
pub fn btf_name(def: &HookDef) -> (String, Kind) {
    if def.kind.is_probe() {
        (def.target.to_string(), Kind::Func)
    } else {
        (format!("btf_trace_{}", def.target), Kind::Typedef)
    }
}

/// Checks `def` against the prototype of BTF type `id` (found by [`btf_name`]), or says why
/// it cannot when `id` is `None`.
#[must_use]
pub fn check(btf: &Btf, def: &HookDef, id: Option<u32>) -> Prototype {
    let target = def.target;
    let Some(id) = id else {
        return Prototype::Unknown(if def.kind.is_probe() {
            format!("{target} is not in the kernel's BTF (inlined, or absent from this kernel)")
        } else {
            format!("the kernel's BTF has no btf_trace_{target}")
        });
    };
    let Some((returns, params)) = btf.prototype(id) else {
        return Prototype::Unknown(format!("{target}: the kernel's BTF gives no prototype"));
    };
    let wanted = def.source.pointee();
    let (index, ty) = match def.source {
        Source::Return => (None, Some(returns)),
        Source::Arg(n) => (Some(usize::from(n)), params.get(usize::from(n)).copied()),
        // The typedef's parameter 0 is the tracepoint's `void *__data`.
        Source::DadWork(n) => (Some(usize::from(n)), params.get(usize::from(n) + 1).copied()),
    };
    let program = def.program;
    match (index, ty) {
        (_, Some(ty)) if btf.pointee_struct(ty) == Some(wanted) => Prototype::Matches,
        (None, Some(ty)) => Prototype::Changed(format!(
            "{target} returns `{}`, {program} reads a `struct {wanted} *` from it",
            btf.spell(ty)
        )),
        (Some(index), Some(ty)) => Prototype::Changed(format!(
            "{target}: argument {index} is `{}`, {program} reads a `struct {wanted} *` there",
            btf.spell(ty)
        )),
        (index, None) => {
            let count = params.len() - usize::from(matches!(def.source, Source::DadWork(_)));
            Prototype::Changed(format!(
                "{target} takes {count} argument{}, {program} reads argument {} (a `struct {wanted} *`)",
                if count == 1 { "" } else { "s" },
                index.unwrap_or_default()
            ))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use dad_trace_common::hooks::{Ends, Hook, Phase, ProgramKind};

    use super::*;
    use crate::kernel::btf::raw::builder::Builder;

    /// BTF kinds as the format numbers them.
    const INT: u32 = 1;
    const PTR: u32 = 2;
    const STRUCT: u32 = 4;
    const TYPEDEF: u32 = 8;
    const FUNC: u32 = 12;
    const FUNC_PROTO: u32 = 13;

    /// A kernel where `addrconf_dad_failure` swapped its arguments, `ipv6_add_addr` returns
    /// an int and `addrconf_dad_completed` lost its argument; `addrconf_dad_kick` and the
    /// queue tracepoint are as dad-trace reads them.
    pub(crate) fn changed_kernel_bytes() -> Vec<u8> {
        let mut b = Builder::new();
        b.record("int", INT, 0, 4, &[32]); // 1
        b.record("inet6_ifaddr", STRUCT, 0, 8, &[]); // 2
        b.record("sk_buff", STRUCT, 0, 8, &[]); // 3
        b.record("", PTR, 0, 2, &[]); // 4: struct inet6_ifaddr *
        b.record("", PTR, 0, 3, &[]); // 5: struct sk_buff *
        let params = b.param_words(&[("ifp", 4)]);
        b.record("", FUNC_PROTO, 1, 0, &params); // 6: void (struct inet6_ifaddr *)
        b.record("addrconf_dad_kick", FUNC, 0, 6, &[]); // 7
        let params = b.param_words(&[("ifp", 4), ("skb", 5)]);
        b.record("", FUNC_PROTO, 2, 0, &params); // 8: swapped
        b.record("addrconf_dad_failure", FUNC, 0, 8, &[]); // 9
        let params = b.param_words(&[("idev", 4)]);
        b.record("", FUNC_PROTO, 1, 1, &params); // 10: int (...)
        b.record("ipv6_add_addr", FUNC, 0, 10, &[]); // 11
        b.record("", FUNC_PROTO, 0, 0, &[]); // 12: void (void)
        b.record("addrconf_dad_completed", FUNC, 0, 12, &[]); // 13
        b.record("work_struct", STRUCT, 0, 32, &[]); // 14
        b.record("", PTR, 0, 14, &[]); // 15
        b.record("", PTR, 0, 0, &[]); // 16: void *
        let params = b.param_words(&[("__data", 16), ("req_cpu", 1), ("pwq", 16), ("work", 15)]);
        b.record("", FUNC_PROTO, 4, 0, &params); // 17
        b.record("", PTR, 0, 17, &[]); // 18
        b.record("btf_trace_workqueue_queue_work", TYPEDEF, 0, 18, &[]); // 19
        b.build()
    }

    fn changed_kernel() -> Btf {
        Btf::parse(changed_kernel_bytes()).expect("valid BTF")
    }

    fn verdict(btf: &Btf, program: &str) -> Prototype {
        let def = crate::kernel::probes::HOOKS
            .iter()
            .find(|def| def.program == program)
            .expect("in the table");
        let (name, kind) = btf_name(def);
        check(btf, def, btf.ids_of(&[name.as_str()], kind).get(&name).copied())
    }

    #[test]
    fn changed_prototypes_are_named_by_function() {
        let btf = changed_kernel();
        assert_eq!(verdict(&btf, "dad_kick"), Prototype::Matches);
        assert_eq!(verdict(&btf, "dad_work_queued_btf"), Prototype::Matches);
        assert_eq!(verdict(&btf, "dad_work_queued"), Prototype::Matches);
        assert_eq!(
            verdict(&btf, "dad_failure"),
            Prototype::Changed(
                "addrconf_dad_failure: argument 1 is `struct sk_buff *`, dad_failure reads a \
                 `struct inet6_ifaddr *` there"
                    .into()
            )
        );
        assert_eq!(
            verdict(&btf, "addr_added"),
            Prototype::Changed(
                "ipv6_add_addr returns `int`, addr_added reads a `struct inet6_ifaddr *` from it".into()
            )
        );
        assert_eq!(
            verdict(&btf, "dad_completed"),
            Prototype::Changed(
                "addrconf_dad_completed takes 0 arguments, dad_completed reads argument 0 (a `struct \
                 inet6_ifaddr *`)"
                    .into()
            )
        );
        assert!(
            matches!(verdict(&btf, "dad_begin"), Prototype::Unknown(why) if why.contains("addrconf_dad_begin")),
            "absent from BTF: nothing to check"
        );
        assert!(
            matches!(verdict(&btf, "dad_work_done"), Prototype::Unknown(why) if why.contains("btf_trace_workqueue_execute_end"))
        );
    }

    /// A tracepoint's argument index counts from its first real argument, not the typedef's
    /// `void *__data`.
    #[test]
    fn a_tracepoint_argument_past_the_end_is_a_change() {
        let btf = changed_kernel();
        let def = HookDef {
            program: "x",
            kind: ProgramKind::RawTracepoint,
            target: "workqueue_queue_work",
            source: Source::DadWork(3),
            hook: Hook::WorkQueued,
            phases: &[Phase::DadBegin],
            ends: Ends::Never,
            fallback: None,
            why: "",
        };
        assert_eq!(
            check(&btf, &def, Some(19)),
            Prototype::Changed(
                "workqueue_queue_work takes 3 arguments, x reads argument 3 (a `struct work_struct *`)".into()
            )
        );
    }
}
