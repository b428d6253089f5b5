/**
 * ladder.js — the order-book ladder: 10 levels per side with size bars.
 *
 * Fed by `depth` events (SPEC §6: full top-10 snapshots with `u`, the last engine `seq`
 * applied to the book). Rules:
 *   - a message with `u` below the shown one is stale and dropped;
 *   - a jump in `u` (u > shown + 1) means updates were coalesced or lost: the snapshot is
 *     shown at once and `GET /depth/{symbol}` is refetched to confirm it (one request in
 *     flight, at most one per second, a later gap waits for the next slot); the REST answer is applied only if it is not older;
 *   - a `u` that goes backwards twice in a row (engine restarted) resets from REST.
 */

export const LEVELS = 10;
const REFETCH_MIN_MS = 1000;

export class Ladder {
  /** @param {HTMLElement} root  @param {(symbol:string)=>Promise<object>} fetchDepth */
  constructor(root, fetchDepth) {
    this.root = root;
    this.asksEl = root.querySelector('#ladder-asks');
    this.bidsEl = root.querySelector('#ladder-bids');
    this.spreadEl = root.querySelector('#ladder-spread');
    this.fetchDepth = fetchDepth;
    this.onPrice = null;
    this.reset(null);
  }

  reset(symbol) {
    if (this.deferred) clearTimeout(this.deferred);
    this.deferred = null;
    this.symbol = symbol;
    this.u = null;
    this.book = { b: [], a: [] };
    this.inFlight = false;
    this.lastRefetch = 0;
    this.backwards = 0;
    this.refetches = 0;
    this.gaps = 0;
    this.root.dataset.symbol = symbol || '';
    this.render();
  }

  /** Load the REST snapshot (used on subscribe and on gaps). */
  async refetch(reason, { force = false } = {}) {
    if (!this.symbol || this.inFlight) return;
    const symbol = this.symbol;
    this.inFlight = true;
    this.lastRefetch = Date.now();
    this.refetches += 1;
    try {
      const snap = await this.fetchDepth(symbol);
      if (symbol !== this.symbol || !snap) return;
      const u = typeof snap.u === 'number' ? snap.u : null;
      if (force || this.u === null || u === null || u >= this.u) this.show(snap);
    } catch (err) {
      console.warn(`depth refetch (${reason}) failed for ${symbol}: ${err.message}`);
    } finally {
      this.inFlight = false;
      this.root.dataset.refetches = String(this.refetches);
    }
  }

  /** Refetch now, or once the 1 s throttle allows (one deferred refetch at a time). */
  refetchSoon(reason) {
    if (this.deferred) return;
    const wait = this.lastRefetch + REFETCH_MIN_MS - Date.now();
    if (wait <= 0 && !this.inFlight) {
      this.refetch(reason);
      return;
    }
    this.deferred = setTimeout(() => {
      this.deferred = null;
      this.refetch(reason);
    }, Math.max(wait, 50));
  }

  /** A live `depth` event. Returns what was done: 'shown', 'stale', 'gap', 'ignored'. */
  onDepth(msg) {
    if (!this.symbol || msg.s !== this.symbol) return 'ignored';
    const u = typeof msg.u === 'number' ? msg.u : null;
    if (u !== null && this.u !== null && u < this.u) {
      this.backwards += 1;
      if (this.backwards >= 2) this.refetch('u went backwards', { force: true });
      return 'stale';
    }
    this.backwards = 0;
    const gap = u !== null && this.u !== null && u > this.u + 1;
    this.show(msg);
    if (gap) {
      this.gaps += 1;
      this.refetchSoon(`gap to ${u}`);
      return 'gap';
    }
    return 'shown';
  }

  show(snap) {
    this.book = { b: (snap.b || []).slice(0, LEVELS), a: (snap.a || []).slice(0, LEVELS) };
    if (typeof snap.u === 'number') this.u = snap.u;
    this.render();
  }

  render() {
    const { a, b } = this.book;
    const max = Math.max(1, ...a.map((l) => Number(l[1])), ...b.map((l) => Number(l[1])));
    // asks: best (lowest) at the bottom, next to the spread
    this.asksEl.replaceChildren(...a.slice().reverse().map((l) => this.row('ask', l, max)));
    this.bidsEl.replaceChildren(...b.map((l) => this.row('bid', l, max)));
    if (a.length && b.length) {
      const spread = Number(a[0][0]) - Number(b[0][0]);
      this.spreadEl.textContent = `spread ${spread}`;
    } else {
      this.spreadEl.textContent = a.length || b.length ? 'one-sided book' : 'empty book';
    }
    this.root.dataset.u = this.u === null ? '' : String(this.u);
    this.root.dataset.asks = String(a.length);
    this.root.dataset.bids = String(b.length);
  }

  row(side, [price, qty], max) {
    const el = document.createElement('div');
    el.className = `lrow ${side}`;
    el.dataset.testid = `${side}-row`;
    el.dataset.price = String(price);
    const bar = document.createElement('span');
    bar.className = 'bar';
    bar.style.width = `${Math.max(1, Math.round((100 * Number(qty)) / max))}%`;
    const px = document.createElement('span');
    px.className = 'px';
    px.textContent = String(price);
    const q = document.createElement('span');
    q.className = 'qty';
    q.textContent = String(qty);
    el.append(bar, px, q);
    el.addEventListener('click', () => this.onPrice && this.onPrice(price));
    return el;
  }
}
