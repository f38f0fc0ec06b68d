import { describe, expect, it } from 'vitest';
import { assemble, jeq, jset, label, ld, ret } from '../../src/sandbox/bpf.js';
import { seccompFilter } from '../../src/sandbox/seccomp.js';

/** A classic-BPF interpreter for the subset the assembler emits, to run the filter against made-up seccomp_data. */
function evaluate(prog: Buffer, data: { nr: number; arch: number; args?: bigint[] }): number {
  const mem = Buffer.alloc(64);
  mem.writeInt32LE(data.nr, 0);
  mem.writeUInt32LE(data.arch, 4);
  (data.args ?? []).forEach((a, i) => mem.writeBigUInt64LE(a, 16 + 8 * i));
  let acc = 0;
  for (let pc = 0; pc < prog.length / 8; ) {
    const code = prog.readUInt16LE(pc * 8);
    const jt = prog.readUInt8(pc * 8 + 2);
    const jf = prog.readUInt8(pc * 8 + 3);
    const k = prog.readUInt32LE(pc * 8 + 4);
    pc++;
    switch (code) {
      case 0x20: acc = mem.readUInt32LE(k); break;
      case 0x54: acc = (acc & k) >>> 0; break;
      case 0x06: return k;
      case 0x15: pc += acc === k ? jt : jf; break;
      case 0x35: pc += acc >= k ? jt : jf; break;
      case 0x45: pc += (acc & k) !== 0 ? jt : jf; break;
      default: throw new Error(`unexpected opcode ${code}`);
    }
  }
  throw new Error('fell off the end');
}

const X86 = 0xc000003e;
const ARM = 0xc00000b7;
const ALLOW = 0x7fff0000;
const EPERM = 0x00050001;
const ENOSYS = 0x00050026;

describe('cBPF assembler', () => {
  it('encodes sock_filter entries and resolves forward labels', () => {
    const p = assemble([ld(4), jeq(7, 'yes'), ret(0), label('yes'), ret(1)]);
    expect(p.length).toBe(32);
    expect([...p.subarray(8, 16)]).toEqual([0x15, 0, 1, 0, 7, 0, 0, 0]); // jeq #7, jt +1, jf +0
    expect(evaluate(p, { nr: 0, arch: 7 })).toBe(1);
    expect(evaluate(p, { nr: 0, arch: 8 })).toBe(0);
  });

  it('refuses unknown labels, backward or far jumps and programs that do not end in ret', () => {
    expect(() => assemble([jeq(1, 'nowhere'), ret(0)])).toThrow(/unknown label/);
    expect(() => assemble([label('back'), ld(0), jset(1, 'back'), ret(0)])).toThrow(/out of range/);
    expect(() => assemble([jeq(1, 'far'), ...Array.from({ length: 300 }, () => ret(0)), label('far'), ret(1)])).toThrow(/out of range/);
    expect(() => assemble([ld(0)])).toThrow(/does not end with ret/);
  });
});

describe('seccomp filter', () => {
  const f = seccompFilter();
  it('denies the keyring calls, nested user namespaces, TIOCSTI/TIOCLINUX on both arches, lets the rest through', () => {
    expect(evaluate(f, { nr: 250, arch: X86 })).toBe(EPERM); // keyctl
    expect(evaluate(f, { nr: 219, arch: ARM })).toBe(EPERM);
    expect(evaluate(f, { nr: 435, arch: X86 })).toBe(ENOSYS); // clone3
    expect(evaluate(f, { nr: 56, arch: X86, args: [0x10000000n] })).toBe(EPERM); // clone(CLONE_NEWUSER)
    expect(evaluate(f, { nr: 56, arch: X86, args: [0x01200011n] })).toBe(ALLOW); // fork-like clone
    expect(evaluate(f, { nr: 97, arch: ARM, args: [0x10000000n] })).toBe(EPERM); // unshare(CLONE_NEWUSER)
    expect(evaluate(f, { nr: 16, arch: X86, args: [0n, 0x5412n] })).toBe(EPERM);
    expect(evaluate(f, { nr: 16, arch: X86, args: [0n, 0x100005412n] })).toBe(EPERM); // high bits ignored by the kernel
    expect(evaluate(f, { nr: 29, arch: ARM, args: [0n, 0x541cn] })).toBe(EPERM);
    expect(evaluate(f, { nr: 16, arch: X86, args: [0n, 0x5401n] })).toBe(ALLOW); // TCGETS
    expect(evaluate(f, { nr: 0, arch: X86 })).toBe(ALLOW); // read
    expect(evaluate(f, { nr: 0x40000000 + 250, arch: X86 })).toBe(EPERM); // x32
    expect(evaluate(f, { nr: 288, arch: 0x40000003 })).toBe(EPERM); // i386
  });
});
