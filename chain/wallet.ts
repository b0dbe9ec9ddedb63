// The embedded chain's wallet: a handful of secp256k1 keys derived from a seed, paying to
// and spending from regtest P2WPKH outputs, plus a seeded random source so that a chain
// built from the same seed (and clock) makes the same choices.

import { secp256k1 } from "@noble/curves/secp256k1.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, concatBytes, hexToBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import { p2wpkh, Transaction as SignerTransaction } from "@scure/btc-signer";
import type { Hex, Utxo } from "./backend.ts";
import { REGTEST_NETWORK } from "./serialise.ts";

/** Key 0 receives coinbases and change; keys 1.. are rotated through as payment recipients. */
const KEY_COUNT = 8;

interface WalletKey {
  secret: Uint8Array;
  script: Uint8Array;
  address: string;
}

export interface Payment {
  script: Uint8Array;
  amount: bigint;
}

export class Wallet {
  private readonly keys: WalletKey[] = [];
  /** Output script hex -> index into `keys`. */
  private readonly byScript = new Map<Hex, number>();
  private nextRecipient = 1;
  private readonly rngKey: Uint8Array;
  private rngCounter = 0;

  constructor(seed: Uint8Array) {
    for (let i = 0; i < KEY_COUNT; i++) {
      const secret = deriveSecret(seed, i);
      const payment = p2wpkh(secp256k1.getPublicKey(secret, true), REGTEST_NETWORK);
      if (payment.address === undefined) throw new Error("p2wpkh produced no address");
      this.byScript.set(bytesToHex(payment.script), i);
      this.keys.push({ secret, script: payment.script, address: payment.address });
    }
    this.rngKey = sha256(concatBytes(utf8ToBytes("modhost/embedded/rng"), seed));
  }

  /** What a restarted chain needs to carry on where it stopped (see restore). */
  get state(): { rngCounter: number; nextRecipient: number } {
    return { rngCounter: this.rngCounter, nextRecipient: this.nextRecipient };
  }

  restore(state: { rngCounter: number; nextRecipient: number }): void {
    this.rngCounter = state.rngCounter;
    if (state.nextRecipient >= 1 && state.nextRecipient < KEY_COUNT) this.nextRecipient = state.nextRecipient;
  }

  /** Where coinbases and change go. */
  get mainScript(): Uint8Array {
    return (this.keys[0] as WalletKey).script;
  }

  get mainAddress(): string {
    return (this.keys[0] as WalletKey).address;
  }

  owns(scriptHex: Hex): boolean {
    return this.byScript.has(scriptHex);
  }

  /** The next payment recipient, cycling through the wallet's non-main keys. */
  recipientScript(): Uint8Array {
    const key = this.keys[this.nextRecipient] as WalletKey;
    this.nextRecipient = (this.nextRecipient % (KEY_COUNT - 1)) + 1;
    return key.script;
  }

  /** Uniform float in [0, 1), from SHA-256 of the seed and a counter. */
  random(): number {
    const counter = new Uint8Array(4);
    new DataView(counter.buffer).setUint32(0, this.rngCounter++, true);
    const digest = sha256(concatBytes(this.rngKey, counter));
    return new DataView(digest.buffer, digest.byteOffset).getUint32(0, true) / 2 ** 32;
  }

  /** Build, sign (BIP143) and finalise a transaction spending one wallet UTXO. */
  signSpend(utxo: Utxo, outputs: Payment[]): Uint8Array {
    const keyIndex = this.byScript.get(utxo.script_pubkey);
    if (keyIndex === undefined) throw new Error(`UTXO ${utxo.txid}:${utxo.vout} is not the wallet's`);
    // Low-R signatures (as Bitcoin Core makes) keep the signature, and so the vsize, stable.
    const tx = new SignerTransaction({ lowR: true });
    tx.addInput({
      txid: utxo.txid,
      index: utxo.vout,
      witnessUtxo: { script: hexToBytes(utxo.script_pubkey), amount: BigInt(utxo.value) },
    });
    for (const output of outputs) tx.addOutput(output);
    tx.signIdx((this.keys[keyIndex] as WalletKey).secret, 0);
    tx.finalize();
    return tx.extract();
  }
}

function deriveSecret(seed: Uint8Array, index: number): Uint8Array {
  // Re-hash on the (astronomically unlikely) event the digest is not a valid scalar.
  for (let attempt = 0; ; attempt++) {
    const secret = sha256(concatBytes(utf8ToBytes(`modhost/embedded/key/${index}/${attempt}`), seed));
    if (secp256k1.utils.isValidSecretKey(secret)) return secret;
  }
}
