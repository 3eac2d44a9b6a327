//! Classic BPF for seccomp: the instruction type, a compiler from a rule list to
//! a program, and a small interpreter so that a policy can be tested without
//! installing it. The policy itself (which syscalls, which action) is data owned
//! by the runtime crate.
//!
//! Program shape: check the architecture (anything but the native one is killed,
//! which denies i386 `int 0x80`), kill any x32 syscall number, then one short
//! block per rule, and finally allow. Each block jumps at most a few
//! instructions, so the 8-bit jump offsets of BPF never overflow.

/// One BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

pub const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
pub const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

/// `AUDIT_ARCH_*` of the architecture this crate is built for.
#[cfg(target_arch = "x86_64")]
pub const NATIVE_AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
pub const NATIVE_AUDIT_ARCH: u32 = 0xC000_00B7;

/// Syscall numbers at or above this on x86_64 are x32 ABI calls.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Offsets in `struct seccomp_data { int nr; u32 arch; u64 ip; u64 args[6]; }`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const fn offset_arg_low(index: u32) -> u32 {
    // Little endian: the low 32 bits of args[i] come first.
    16 + 8 * index
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Fail the call with this errno.
    Errno(u16),
    /// Kill the whole process.
    KillProcess,
}

impl Action {
    fn ret_value(self) -> u32 {
        match self {
            Action::Errno(errno) => SECCOMP_RET_ERRNO | u32::from(errno),
            Action::KillProcess => SECCOMP_RET_KILL_PROCESS,
        }
    }
}

/// When a rule matches, given the syscall number already matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgMatch {
    /// Always.
    Any,
    /// When the low 32 bits of argument `index` share a bit with `mask`
    /// (clone flags with a namespace bit).
    AnyBitSet { index: u32, mask: u32 },
    /// When the low 32 bits of argument `index` equal `value` (an ioctl request;
    /// the kernel truncates it to 32 bits, so the high half cannot evade this).
    LowEquals { index: u32, value: u32 },
}

/// One rule: syscall `nr` with `args` gets `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub nr: u32,
    pub args: ArgMatch,
    pub action: Action,
}

const fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// Compiles `rules` into a default-allow program for the native architecture.
pub fn compile(rules: &[Rule]) -> Vec<SockFilter> {
    let mut program = vec![
        stmt(BPF_LD_W_ABS, OFFSET_ARCH),
        jump(BPF_JEQ_K, NATIVE_AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFFSET_NR),
    ];
    if cfg!(target_arch = "x86_64") {
        program.push(jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1));
        program.push(stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS));
    }
    for rule in rules {
        push_rule(&mut program, rule);
    }
    program.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    program
}

/// Appends one rule. The accumulator holds the syscall number on entry and on
/// every exit that falls through to the next rule.
fn push_rule(program: &mut Vec<SockFilter>, rule: &Rule) {
    let ret = stmt(BPF_RET_K, rule.action.ret_value());
    match rule.args {
        ArgMatch::Any => {
            program.push(jump(BPF_JEQ_K, rule.nr, 0, 1));
            program.push(ret);
        }
        ArgMatch::AnyBitSet { index, mask } => {
            // nr? -> load arg -> bits? ret : reload nr
            program.push(jump(BPF_JEQ_K, rule.nr, 0, 4));
            program.push(stmt(BPF_LD_W_ABS, offset_arg_low(index)));
            program.push(jump(BPF_JSET_K, mask, 0, 1));
            program.push(ret);
            program.push(stmt(BPF_LD_W_ABS, OFFSET_NR));
        }
        ArgMatch::LowEquals { index, value } => {
            program.push(jump(BPF_JEQ_K, rule.nr, 0, 4));
            program.push(stmt(BPF_LD_W_ABS, offset_arg_low(index)));
            program.push(jump(BPF_JEQ_K, value, 0, 1));
            program.push(ret);
            program.push(stmt(BPF_LD_W_ABS, OFFSET_NR));
        }
    }
}

/// The input of a filter run, as the kernel's `struct seccomp_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeccompData {
    pub nr: u32,
    pub arch: u32,
    pub args: [u64; 6],
}

/// Runs `program` on `data` like the kernel would; returns the action value.
/// For tests of a policy. Panics on an instruction `compile` never emits.
pub fn evaluate(program: &[SockFilter], data: &SeccompData) -> u32 {
    let mut accumulator: u32 = 0;
    let mut pc = 0usize;
    loop {
        let insn = program[pc];
        pc += 1;
        match insn.code {
            BPF_LD_W_ABS => accumulator = load(data, insn.k),
            BPF_RET_K => return insn.k,
            BPF_JEQ_K | BPF_JGE_K | BPF_JSET_K => {
                let taken = match insn.code {
                    BPF_JEQ_K => accumulator == insn.k,
                    BPF_JGE_K => accumulator >= insn.k,
                    _ => accumulator & insn.k != 0,
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            other => panic!("instruction {other:#x} is not emitted by compile"),
        }
    }
}

fn load(data: &SeccompData, offset: u32) -> u32 {
    match offset {
        OFFSET_NR => data.nr,
        OFFSET_ARCH => data.arch,
        _ => {
            let index = ((offset - 16) / 8) as usize;
            let high = (offset - 16) % 8 == 4;
            let arg = data.args[index];
            if high {
                (arg >> 32) as u32
            } else {
                arg as u32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(nr: u32, args: [u64; 6]) -> SeccompData {
        SeccompData {
            nr,
            arch: NATIVE_AUDIT_ARCH,
            args,
        }
    }

    fn rules() -> Vec<Rule> {
        vec![
            Rule {
                nr: 165,
                args: ArgMatch::Any,
                action: Action::Errno(1),
            },
            Rule {
                nr: 56,
                args: ArgMatch::AnyBitSet {
                    index: 0,
                    mask: 0x1000_0000,
                },
                action: Action::Errno(1),
            },
            Rule {
                nr: 16,
                args: ArgMatch::LowEquals {
                    index: 1,
                    value: 0x5412,
                },
                action: Action::Errno(1),
            },
            Rule {
                nr: 435,
                args: ArgMatch::Any,
                action: Action::Errno(38),
            },
        ]
    }

    #[test]
    fn denies_matching_calls_and_allows_the_rest() {
        let program = compile(&rules());
        let eperm = SECCOMP_RET_ERRNO | 1;
        assert_eq!(evaluate(&program, &call(165, [0; 6])), eperm);
        assert_eq!(evaluate(&program, &call(0, [0; 6])), SECCOMP_RET_ALLOW);
        assert_eq!(
            evaluate(&program, &call(435, [0; 6])),
            SECCOMP_RET_ERRNO | 38
        );
    }

    #[test]
    fn argument_rules_look_at_the_argument() {
        let program = compile(&rules());
        let eperm = SECCOMP_RET_ERRNO | 1;
        let cases = [
            (56, [0x1000_0011, 0], eperm),
            (56, [0x11, 0], SECCOMP_RET_ALLOW),
            (16, [1, 0x5412], eperm),
            // The kernel truncates the ioctl request to 32 bits: so does the filter.
            (16, [1, 0x1_0000_5412], eperm),
            (16, [1, 0x5413], SECCOMP_RET_ALLOW),
        ];
        for (nr, [first, second], expected) in cases {
            let args = [first, second, 0, 0, 0, 0];
            assert_eq!(
                evaluate(&program, &call(nr, args)),
                expected,
                "{nr} {args:x?}"
            );
        }
    }

    #[test]
    fn foreign_architectures_and_x32_are_killed() {
        let program = compile(&rules());
        let mut i386 = call(0, [0; 6]);
        i386.arch = 0x4000_0003;
        assert_eq!(evaluate(&program, &i386), SECCOMP_RET_KILL_PROCESS);
        if cfg!(target_arch = "x86_64") {
            let x32 = call(X32_SYSCALL_BIT | 165, [0; 6]);
            assert_eq!(evaluate(&program, &x32), SECCOMP_RET_KILL_PROCESS);
        }
    }
}
