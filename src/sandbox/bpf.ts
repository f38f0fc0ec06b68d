/**
 * A tiny classic-BPF assembler: enough to build a seccomp filter at run time
 * without a compiler (bwrap takes the compiled program on `--seccomp FD`).
 * Jumps name labels; only forward jumps exist in cBPF, and each must fit in
 * 8 bits, which `assemble` checks.
 */

// linux/bpf_common.h
const BPF_LD = 0x00;
const BPF_ALU = 0x04;
const BPF_JMP = 0x05;
const BPF_RET = 0x06;
const BPF_W = 0x00;
const BPF_ABS = 0x20;
const BPF_K = 0x00;
const BPF_JEQ = 0x10;
const BPF_JGE = 0x30;
const BPF_JSET = 0x40;
const BPF_AND = 0x50;

/** A jump target: a label, or the next instruction. */
export type Target = string | 'next';

export type Insn =
  | { op: 'label'; name: string }
  | { op: 'ld'; offset: number }
  | { op: 'and'; k: number }
  | { op: 'jeq' | 'jge' | 'jset'; k: number; jt: Target; jf: Target }
  | { op: 'ret'; k: number };

export const ld = (offset: number): Insn => ({ op: 'ld', offset });
export const and = (k: number): Insn => ({ op: 'and', k });
export const jeq = (k: number, jt: Target, jf: Target = 'next'): Insn => ({ op: 'jeq', k, jt, jf });
export const jge = (k: number, jt: Target, jf: Target = 'next'): Insn => ({ op: 'jge', k, jt, jf });
export const jset = (k: number, jt: Target, jf: Target = 'next'): Insn => ({ op: 'jset', k, jt, jf });
export const ret = (k: number): Insn => ({ op: 'ret', k });
export const label = (name: string): Insn => ({ op: 'label', name });

const JUMP_CODES = { jeq: BPF_JEQ, jge: BPF_JGE, jset: BPF_JSET } as const;

/** struct sock_filter[] in host byte order: u16 code, u8 jt, u8 jf, u32 k. */
export function assemble(program: Insn[]): Buffer {
  const labels = new Map<string, number>();
  const code: Exclude<Insn, { op: 'label' }>[] = [];
  for (const i of program) {
    if (i.op !== 'label') code.push(i);
    else if (labels.has(i.name)) throw new Error(`bpf: label ${i.name} defined twice`);
    else labels.set(i.name, code.length);
  }
  if (code.length === 0 || code.length > 4096) throw new Error(`bpf: program of ${code.length} instructions`);
  const out = Buffer.alloc(code.length * 8);
  const le = isLittleEndian();
  code.forEach((i, at) => {
    let op: number;
    let jt = 0;
    let jf = 0;
    let k: number;
    switch (i.op) {
      case 'ld':
        op = BPF_LD | BPF_W | BPF_ABS;
        k = i.offset;
        break;
      case 'and':
        op = BPF_ALU | BPF_AND | BPF_K;
        k = i.k;
        break;
      case 'ret':
        op = BPF_RET | BPF_K;
        k = i.k;
        break;
      default:
        op = BPF_JMP | JUMP_CODES[i.op] | BPF_K;
        k = i.k;
        jt = offsetTo(i.jt, at, labels);
        jf = offsetTo(i.jf, at, labels);
    }
    const o = at * 8;
    if (le) {
      out.writeUInt16LE(op, o);
      out.writeUInt32LE(k >>> 0, o + 4);
    } else {
      out.writeUInt16BE(op, o);
      out.writeUInt32BE(k >>> 0, o + 4);
    }
    out.writeUInt8(jt, o + 2);
    out.writeUInt8(jf, o + 3);
  });
  // The last instruction must return: falling off the end is rejected by the kernel anyway, but say why here.
  if (code[code.length - 1]!.op !== 'ret') throw new Error('bpf: program does not end with ret');
  return out;
}

function offsetTo(target: Target, at: number, labels: Map<string, number>): number {
  if (target === 'next') return 0;
  const dest = labels.get(target);
  if (dest === undefined) throw new Error(`bpf: unknown label ${target}`);
  const off = dest - at - 1;
  if (off < 0 || off > 255) throw new Error(`bpf: jump to ${target} out of range (${off})`);
  return off;
}

function isLittleEndian(): boolean {
  return new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
}
