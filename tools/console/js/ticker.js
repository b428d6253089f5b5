/**
 * ticker.js — the ticker strip: one cell per subscribed symbol with the last price, the
 * change today and the previous day's change (`ticker` events, SPEC §6: `p`, `c`, `yc`).
 * Clicking a cell makes that symbol the main one.
 *
 * A subscription's first `ticker` may arrive before the server's `subscribed` ack has made
 * the cell (the streamer sends the current state, the ws handler the ack: two senders, no
 * order between them), so the last event of every symbol is kept and shown when its cell
 * appears.
 */

export function pct(v) {
  if (v === null || v === undefined || Number.isNaN(Number(v))) return '—';
  const n = Number(v);
  return `${n > 0 ? '+' : ''}${n.toFixed(2)}%`;
}

function cls(v) {
  const n = Number(v);
  if (v === null || v === undefined || Number.isNaN(n) || n === 0) return 'flat';
  return n > 0 ? 'up' : 'down';
}

export class TickerStrip {
  constructor(root) {
    this.root = root;
    this.cells = new Map();
    this.latest = new Map(); // symbol -> its last ticker event, shown or not
    this.onPick = null;
  }

  /** Show exactly these symbols (main first, marked), keeping known values. */
  setSymbols(main, subs) {
    const wanted = [main, ...subs.filter((s) => s !== main)].filter(Boolean);
    for (const [sym, cell] of this.cells) {
      if (!wanted.includes(sym)) {
        cell.remove();
        this.cells.delete(sym);
      }
    }
    for (const sym of wanted) {
      let cell = this.cells.get(sym);
      if (!cell) {
        cell = document.createElement('button');
        cell.type = 'button';
        cell.className = 'tick';
        cell.dataset.testid = `ticker-${sym}`;
        cell.dataset.symbol = sym;
        cell.innerHTML = '<span class="t-sym"></span> <span class="t-price">—</span> '
          + '<span class="t-change flat" title="today">—</span> <span class="t-prev flat" title="previous day">—</span>';
        cell.querySelector('.t-sym').textContent = sym;
        cell.addEventListener('click', () => this.onPick && this.onPick(sym));
        this.cells.set(sym, cell);
        if (this.latest.has(sym)) this.show(cell, this.latest.get(sym));
      }
      cell.classList.toggle('main', sym === main);
      this.root.append(cell); // keeps the wanted order
    }
  }

  onTicker(msg) {
    this.latest.set(msg.s, msg);
    const cell = this.cells.get(msg.s);
    if (cell) this.show(cell, msg);
  }

  show(cell, msg) {
    cell.querySelector('.t-price').textContent = msg.p === null || msg.p === undefined ? '—' : String(msg.p);
    const c = cell.querySelector('.t-change');
    c.textContent = pct(msg.c);
    c.className = `t-change ${cls(msg.c)}`;
    const y = cell.querySelector('.t-prev');
    y.textContent = `prev ${pct(msg.yc)}`;
    y.className = `t-prev ${cls(msg.yc)}`;
    cell.dataset.price = String(msg.p ?? '');
  }
}
