/**
 * candles.js — candle time and timeframe arithmetic, with no DOM and no chart library.
 *
 * Epoch seconds (UTC) throughout. The WebSocket `candle` / `candle_close` events carry
 * `t` as `YYYYMMDDHHMM` (UTC, SPEC §4/§6); `candleTimeToEpoch` is the ONE place that
 * converts it. Timeframes above 1m are aggregated here from 1-minute events: buckets are
 * aligned on the UTC epoch (`floor(time / seconds) * seconds`, so 1d starts at 00:00 UTC).
 */

export const TIMEFRAMES = Object.freeze({
  '1m': 60,
  '3m': 180,
  '5m': 300,
  '15m': 900,
  '30m': 1800,
  '1h': 3600,
  '4h': 14400,
  '1d': 86400,
});

/** `YYYYMMDDHHMM` (string or number, UTC) → epoch seconds; throws on anything else. */
export function candleTimeToEpoch(t) {
  const s = String(t);
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})$/.exec(s);
  if (!m) throw new Error(`bad candle time ${JSON.stringify(t)} (want YYYYMMDDHHMM)`);
  const [, y, mo, d, h, mi] = m.map(Number);
  const ms = Date.UTC(y, mo - 1, d, h, mi);
  const back = new Date(ms);
  if (back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d || h > 23 || mi > 59) {
    throw new Error(`bad candle time ${s}`);
  }
  return ms / 1000;
}

export function bucketStart(epochSec, tf) {
  const sec = TIMEFRAMES[tf];
  if (!sec) throw new Error(`unknown timeframe ${tf}`);
  return Math.floor(epochSec / sec) * sec;
}

/** A WebSocket candle event as a 1-minute bar {time, open, high, low, close, volume}. */
export function minuteBar(msg) {
  return {
    time: candleTimeToEpoch(msg.t),
    open: Number(msg.o),
    high: Number(msg.h),
    low: Number(msg.l),
    close: Number(msg.c),
    volume: Number(msg.v),
  };
}

/** A bar of the `/chart` API with numeric fields. */
export function restBar(d) {
  return {
    time: Number(d.time),
    open: Number(d.open),
    high: Number(d.high),
    low: Number(d.low),
    close: Number(d.close),
    volume: Number(d.volume ?? 0),
  };
}

/**
 * One higher-timeframe bucket being built from 1-minute bars.
 *
 * `base` is what the chart API said about the bucket before live events started, with the
 * then-open minute taken out (it is kept in `mins` and replaced by its live updates, so its
 * volume is never counted twice).
 */
export class Bucket {
  constructor(time, base = null, baseUntil = -Infinity) {
    this.time = time;
    this.base = base;
    this.baseUntil = baseUntil; // the minute whose close `base.close` reflects
    this.mins = new Map();
  }

  put(bar) {
    this.mins.set(bar.time, bar);
  }

  bar() {
    let open;
    let high = -Infinity;
    let low = Infinity;
    let close;
    let volume = 0;
    let closeAt = -Infinity;
    if (this.base) {
      ({ open, close } = this.base);
      high = this.base.high;
      low = this.base.low;
      volume = this.base.volume;
      closeAt = this.baseUntil;
    }
    const mins = [...this.mins.values()].sort((a, b) => a.time - b.time);
    for (const m of mins) {
      if (open === undefined) open = m.open;
      high = Math.max(high, m.high);
      low = Math.min(low, m.low);
      volume += m.volume;
      if (m.time >= closeAt) {
        close = m.close;
        closeAt = m.time;
      }
    }
    return { time: this.time, open, high, low, close, volume };
  }
}
