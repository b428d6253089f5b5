/**
 * chart.js — the candle chart with a volume histogram (TradingView Lightweight Charts 5).
 *
 * `load(symbol, tf)` calls `GET /chart` and `setData`s both series; live `candle` /
 * `candle_close` events (always 1-minute) go through `onCandle`, which `update`s the bar
 * of their bucket — directly for 1m, aggregated in the page (candles.js `Bucket`) for
 * 3m … 1d. Events that arrive while a load is in flight are replayed after it. The chart
 * container carries `data-*` attributes (bars, last time/close/volume, loads) for tests.
 */

import { CandlestickSeries, ColorType, createChart, HistogramSeries } from '../vendor/lightweight-charts.mjs';
import { Bucket, bucketStart, minuteBar, restBar, TIMEFRAMES } from './candles.js';

const UP = '#26a69a';
const DOWN = '#ef5350';

export class CandleChart {
  /** @param {HTMLElement} el  @param {(symbol, interval, limit) => Promise<object>} fetchChart */
  constructor(el, fetchChart, legendEl = null) {
    this.el = el;
    this.legendEl = legendEl;
    this.fetchChart = fetchChart;
    this.chart = createChart(el, {
      autoSize: true,
      layout: { background: { type: ColorType.Solid, color: '#0f141b' }, textColor: '#aeb9c6' },
      grid: { vertLines: { color: '#1c2430' }, horzLines: { color: '#1c2430' } },
      timeScale: { timeVisible: true, secondsVisible: false, borderColor: '#2a3442', barSpacing: 9, rightOffset: 4 },
      rightPriceScale: { borderColor: '#2a3442' },
    });
    this.candles = this.chart.addSeries(CandlestickSeries, {
      upColor: UP, downColor: DOWN, wickUpColor: UP, wickDownColor: DOWN, borderVisible: false,
      priceFormat: { type: 'price', precision: 0, minMove: 1 }, // prices are integer ticks
    });
    this.candles.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.28 } });
    this.volume = this.chart.addSeries(HistogramSeries, {
      priceFormat: { type: 'volume' }, priceScaleId: '', lastValueVisible: false, priceLineVisible: false,
    });
    this.volume.priceScale().applyOptions({ scaleMargins: { top: 0.78, bottom: 0 } });
    this.symbol = null;
    this.tf = '1m';
    this.bars = [];
    this.buckets = new Map();
    this.loading = null;
    this.pending = [];
    this.loads = 0;
    this.updates = 0;
  }

  /** Replace the data: GET /chart for the symbol and timeframe, then setData. */
  async load(symbol, tf) {
    if (!TIMEFRAMES[tf]) throw new Error(`unknown timeframe ${tf}`);
    this.symbol = symbol;
    this.tf = tf;
    const token = {};
    this.loading = token;
    this.pending = [];
    this.el.dataset.symbol = symbol;
    this.el.dataset.tf = tf;
    this.el.dataset.state = 'loading';
    let bars = [];
    let openMinute = null;
    try {
      const [res, minute] = await Promise.all([
        this.fetchChart(symbol, tf, 300),
        tf === '1m' ? Promise.resolve(null) : this.fetchChart(symbol, '1m', 1).catch(() => null),
      ]);
      if (this.loading !== token) return;
      bars = ((res && res.data) || []).map(restBar).filter((b) => Number.isFinite(b.time));
      bars.sort((a, b) => a.time - b.time);
      const m = minute && minute.data && minute.data.length ? restBar(minute.data[minute.data.length - 1]) : null;
      openMinute = m;
    } catch (err) {
      if (this.loading !== token) return;
      console.warn(`chart load failed for ${symbol} ${tf}: ${err.message}`);
      this.el.dataset.error = err.message;
    }
    this.bars = bars;
    this.buckets = new Map();
    if (openMinute && bars.length) {
      const last = bars[bars.length - 1];
      if (bucketStart(openMinute.time, tf) === last.time) {
        const base = { ...last, volume: last.volume - openMinute.volume };
        const bucket = new Bucket(last.time, base, openMinute.time);
        bucket.put(openMinute);
        this.buckets.set(last.time, bucket);
      }
    }
    this.candles.setData(bars.map(({ time, open, high, low, close }) => ({ time, open, high, low, close })));
    this.volume.setData(bars.map((b) => this.volumePoint(b)));
    this.loading = null;
    this.loads += 1;
    this.el.dataset.loads = String(this.loads);
    this.el.dataset.state = 'ready';
    const queued = this.pending;
    this.pending = [];
    for (const msg of queued) this.onCandle(msg);
    this.publish();
  }

  volumePoint(b) {
    return { time: b.time, value: b.volume, color: b.close >= b.open ? `${UP}80` : `${DOWN}80` };
  }

  /** A live 1-minute `candle` / `candle_close` event of any symbol. */
  onCandle(msg) {
    if (msg.s !== this.symbol) return;
    if (this.loading) {
      this.pending.push(msg);
      return;
    }
    let minute;
    try {
      minute = minuteBar(msg);
    } catch (err) {
      console.warn(`candle event ignored: ${err.message}`);
      return;
    }
    const time = bucketStart(minute.time, this.tf);
    let bar;
    if (this.tf === '1m') {
      bar = minute;
    } else {
      let bucket = this.buckets.get(time);
      if (!bucket) {
        const loaded = this.bars.find((b) => b.time === time);
        const newest = this.bars.length && this.bars[this.bars.length - 1].time === time;
        // a bucket loaded whole before it closed already counts this minute: keep its REST bar
        if (loaded && !newest) return;
        // newest bucket without the open-minute split (its 1m fetch failed): base on the REST bar
        bucket = new Bucket(time, loaded || null, -Infinity);
        this.buckets.set(time, bucket);
      }
      bucket.put(minute);
      bar = bucket.bar();
    }
    this.apply(bar);
  }

  apply(bar) {
    const last = this.bars[this.bars.length - 1];
    if (!last || bar.time >= last.time) {
      if (last && last.time === bar.time) this.bars[this.bars.length - 1] = bar;
      else this.bars.push(bar);
      const { time, open, high, low, close } = bar;
      this.candles.update({ time, open, high, low, close });
      this.volume.update(this.volumePoint(bar));
    } else {
      // a late event for an older bar: lightweight-charts only updates the last bar
      const i = this.bars.findIndex((b) => b.time >= bar.time);
      if (this.bars[i].time === bar.time) this.bars[i] = bar;
      else this.bars.splice(i, 0, bar);
      this.candles.setData(this.bars.map(({ time, open, high, low, close }) => ({ time, open, high, low, close })));
      this.volume.setData(this.bars.map((b) => this.volumePoint(b)));
    }
    this.updates += 1;
    this.publish();
  }

  publish() {
    const last = this.bars[this.bars.length - 1];
    const d = this.el.dataset;
    d.bars = String(this.bars.length);
    d.updates = String(this.updates);
    d.lastTime = last ? String(last.time) : '';
    d.lastClose = last ? String(last.close) : '';
    d.lastVolume = last ? String(last.volume) : '';
    if (this.legendEl) {
      this.legendEl.textContent = last
        ? `O ${last.open} H ${last.high} L ${last.low} C ${last.close} V ${last.volume}`
        : 'no candles yet';
    }
  }
}
