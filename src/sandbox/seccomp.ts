import { and, assemble, jeq, jge, jset, label, ld, ret, type Insn } from './bpf.js';

// linux/seccomp.h, linux/audit.h
const RET_ALLOW = 0x7fff0000;
const RET_ERRNO = 0x00050000;
const EPERM = 1;
const ENOSYS = 38;
const AUDIT_ARCH_X86_64 = 0xc000003e;
const AUDIT_ARCH_AARCH64 = 0xc00000b7;
const X32_SYSCALL_BIT = 0x40000000;
const CLONE_NEWUSER = 0x10000000;
const TIOCSTI = 0x5412;
const TIOCLINUX = 0x541c;

// struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6] (little-endian on both arches we build for).
const NR = 0;
const ARCH = 4;
const argLow = (n: number): number => 16 + 8 * n;

type Arch = 'x86_64' | 'aarch64';

/** Syscall numbers per architecture (x86_64 table, asm-generic table for aarch64). */
const NUMBERS: Record<string, Record<Arch, number | null>> = {
  keyctl: { x86_64: 250, aarch64: 219 },
  add_key: { x86_64: 248, aarch64: 217 },
  request_key: { x86_64: 249, aarch64: 218 },
  ptrace: { x86_64: 101, aarch64: 117 },
  clone: { x86_64: 56, aarch64: 220 },
  unshare: { x86_64: 272, aarch64: 97 },
  clone3: { x86_64: 435, aarch64: 435 },
  ioctl: { x86_64: 16, aarch64: 29 },
  setns: { x86_64: 308, aarch64: 268 },
  userfaultfd: { x86_64: 323, aarch64: 282 },
  perf_event_open: { x86_64: 298, aarch64: 241 },
  bpf: { x86_64: 321, aarch64: 280 },
  syslog: { x86_64: 103, aarch64: 116 },
  uselib: { x86_64: 134, aarch64: null },
  acct: { x86_64: 163, aarch64: 89 },
  quotactl: { x86_64: 179, aarch64: 60 },
  kexec_load: { x86_64: 246, aarch64: 104 },
  kexec_file_load: { x86_64: 320, aarch64: 294 },
  init_module: { x86_64: 175, aarch64: 105 },
  finit_module: { x86_64: 313, aarch64: 273 },
  delete_module: { x86_64: 176, aarch64: 106 },
  open_by_handle_at: { x86_64: 304, aarch64: 265 },
  mount: { x86_64: 165, aarch64: 40 },
  umount2: { x86_64: 166, aarch64: 39 },
  pivot_root: { x86_64: 155, aarch64: 41 },
  swapon: { x86_64: 167, aarch64: 224 },
  swapoff: { x86_64: 168, aarch64: 225 },
  reboot: { x86_64: 169, aarch64: 142 },
  open_tree: { x86_64: 428, aarch64: 428 },
  move_mount: { x86_64: 429, aarch64: 429 },
  fsopen: { x86_64: 430, aarch64: 430 },
  fsconfig: { x86_64: 431, aarch64: 431 },
  fsmount: { x86_64: 432, aarch64: 432 },
  fspick: { x86_64: 433, aarch64: 433 },
  mount_setattr: { x86_64: 442, aarch64: 442 },
};

/**
 * Denied outright with EPERM. The keyring calls reach the host user's
 * session and user keyrings (Kerberos KEYRING: caches, fscrypt keys) through
 * every namespace; ptrace is refused although the pid namespace already
 * hides every outside process; the rest are kernel-attack surface or
 * administration that a tool run by an agent has no use for.
 */
export const DENIED = [
  'keyctl', 'add_key', 'request_key', 'ptrace', 'setns', 'userfaultfd', 'perf_event_open', 'bpf', 'syslog', 'uselib', 'acct', 'quotactl',
  'kexec_load', 'kexec_file_load', 'init_module', 'finit_module', 'delete_module', 'open_by_handle_at', 'mount', 'umount2', 'pivot_root',
  'swapon', 'swapoff', 'reboot',
] as const;

/**
 * ENOSYS, so libc falls back to an older call the filter can inspect:
 * clone3 passes its flags in memory (seccomp cannot see CLONE_NEWUSER
 * there); the new mount API is refused like mount itself.
 */
export const NOT_IMPLEMENTED = ['clone3', 'open_tree', 'move_mount', 'fsopen', 'fsconfig', 'fsmount', 'fspick', 'mount_setattr'] as const;

/** Human lines for `run --explain`. */
export function describeFilter(): string[] {
  return [
    `EPERM: ${DENIED.join(', ')}`,
    `ENOSYS: ${NOT_IMPLEMENTED.join(', ')}`,
    'EPERM: clone/unshare with CLONE_NEWUSER; ioctl TIOCSTI and TIOCLINUX',
    'EPERM: every call of another ABI (i386, x32)',
  ];
}

function archRules(arch: Arch): Insn[] {
  const nr = (name: string): number | null => NUMBERS[name]![arch];
  const out: Insn[] = [label(arch), ld(NR)];
  // x32 calls share the x86_64 audit arch with bit 30 set and have numbers of their own: refuse them all.
  if (arch === 'x86_64') out.push(jge(X32_SYSCALL_BIT, 'eperm'));
  for (const name of DENIED) {
    const n = nr(name);
    if (n !== null) out.push(jeq(n, 'eperm'));
  }
  for (const name of NOT_IMPLEMENTED) out.push(jeq(nr(name)!, 'enosys'));
  const flagsCheck = (name: 'clone' | 'unshare'): Insn[] => {
    const l = `${arch}-${name}-skip`;
    return [jeq(nr(name)!, 'next', l), ld(argLow(0)), jset(CLONE_NEWUSER, 'eperm', 'allow'), label(l)];
  };
  out.push(...flagsCheck('clone'), ...flagsCheck('unshare'));
  // The kernel takes ioctl's request as an unsigned int: compare only the low 32 bits (flatpak's CVE-2019-10063).
  out.push(jeq(nr('ioctl')!, 'next', 'allow'), ld(argLow(1)), and(0xffffffff), jeq(TIOCSTI, 'eperm'), jeq(TIOCLINUX, 'eperm', 'allow'));
  return out;
}

/** The compiled filter for `bwrap --seccomp FD`, checking the architecture first. */
export function seccompFilter(): Buffer {
  return assemble([
    ld(ARCH),
    jeq(AUDIT_ARCH_X86_64, 'x86_64'),
    jeq(AUDIT_ARCH_AARCH64, 'aarch64', 'eperm'),
    ...archRules('x86_64'),
    ...archRules('aarch64'),
    label('allow'),
    ret(RET_ALLOW),
    label('eperm'),
    ret(RET_ERRNO | EPERM),
    label('enosys'),
    ret(RET_ERRNO | ENOSYS),
  ]);
}
