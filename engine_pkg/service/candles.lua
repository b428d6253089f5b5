-- One call per symbol per batch (engine service, issue 4): apply the batch's result for one
-- symbol to the depth cache, idempotently.
--
-- KEYS[1] depth:{SYM}   KEYS[2] ticker:{SYM}   KEYS[3] candle:1m:{SYM}   KEYS[4] candle:closed:1m:{SYM}
-- ARGV[1] SYM  ARGV[2] u (engine seq of the depth)  ARGV[3] depth JSON ('' = leave depth alone)
-- ARGV[4] ticker JSON ('' = none)  ARGV[5..] the batch's trades as quads: seq, minute, price, qty
--         (minute = YYYYMMDDHHMM UTC; price and qty decimal integer strings), optionally
--         followed by ONE more value: the engine's current minute (the batch's arrival minute)
--
-- depth:{SYM} is replaced only when u is not older than the stored one. Trades with a seq at
-- or below the candle hash's `seq` field were applied before (a replay after a crash) and are
-- skipped. A trade of a later minute than the open candle closes it: the closed candle is
-- pushed as JSON {"s","o","h","l","c","v","t"} onto candle:closed:1m:{SYM}. A trade of an
-- earlier minute (a late ts) is folded into the open candle. Candles are also closed by time
-- (candle_close.lua, run by the engine at the minute boundary once its shard is caught up):
-- that removes t o h l c v from the hash, keeps `seq` and records the closed minute as `ct`.
-- A trade whose minute is at or before `ct` (late for a minute already closed) never reopens
-- it: it is folded into the open candle if there is one, else it opens the candle of the
-- current minute (the extra ARGV; the minute after `ct` if that is not later). Volumes are
-- added as decimal strings, so they stay exact beyond 2^53. The ticker is written only when
-- a new trade was applied. Returns the number of trades applied.

-- the minute after YYYYMMDDHHMM (UTC calendar, leap years included)
local function next_minute(m)
  local y, mo, d = tonumber(m:sub(1, 4)), tonumber(m:sub(5, 6)), tonumber(m:sub(7, 8))
  local hh, mm = tonumber(m:sub(9, 10)), tonumber(m:sub(11, 12)) + 1
  if mm == 60 then mm = 0; hh = hh + 1 end
  if hh == 24 then
    hh = 0; d = d + 1
    local dim = ({31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31})[mo]
    if mo == 2 and (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) then dim = 29 end
    if d > dim then d = 1; mo = mo + 1 end
    if mo == 13 then mo = 1; y = y + 1 end
  end
  return string.format('%04d%02d%02d%02d%02d', y, mo, d, hh, mm)
end

local function bigadd(a, b)
  if #a < 16 and #b < 16 then
    return string.format('%.0f', tonumber(a) + tonumber(b))
  end
  local out, carry, i, j = {}, 0, #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local s = carry
    if i > 0 then s = s + string.byte(a, i) - 48; i = i - 1 end
    if j > 0 then s = s + string.byte(b, j) - 48; j = j - 1 end
    out[#out + 1] = string.char(48 + s % 10)
    carry = math.floor(s / 10)
  end
  return string.reverse(table.concat(out))
end

local sym, u = ARGV[1], tonumber(ARGV[2])
if ARGV[3] ~= '' then
  local cur = redis.call('GET', KEYS[1])
  local cu = -1
  if cur then cu = tonumber(string.match(cur, '"u":(%d+)')) or -1 end
  if u >= cu then redis.call('SET', KEYS[1], ARGV[3]) end
end

local n = #ARGV
local now_m = nil
if (n - 4) % 4 == 1 then now_m = ARGV[n]; n = n - 1 end
if n < 8 then return 0 end
local cur = redis.call('HMGET', KEYS[3], 'seq', 't', 'o', 'h', 'l', 'c', 'v', 'ct')
local last = tonumber(cur[1]) or 0
local t, o, h, l, c, v, ct = cur[2], cur[3], cur[4], cur[5], cur[6], cur[7], cur[8]
if not (t and o and h and l and c and v) then t = nil end
local applied = 0
for i = 5, n, 4 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    local m, p, q = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    if ct and m <= ct and not t then
      -- late trade of a minute already closed by time, no candle open: the current minute
      if now_m and now_m > ct then m = now_m else m = next_minute(ct) end
    end
    if t and m > t then
      redis.call('RPUSH', KEYS[4], '{"s":"' .. sym .. '","o":' .. o .. ',"h":' .. h .. ',"l":' .. l ..
        ',"c":' .. c .. ',"v":' .. v .. ',"t":"' .. t .. '"}')
      t = nil
    end
    if not t then
      t, o, h, l, c, v = m, p, p, p, p, q
    else
      local pn = tonumber(p)
      if pn > tonumber(h) then h = p end
      if pn < tonumber(l) then l = p end
      c = p
      v = bigadd(v, q)
    end
    last = seq
    applied = applied + 1
  end
end
if applied > 0 then
  redis.call('HSET', KEYS[3], 'seq', last, 't', t, 'o', o, 'h', h, 'l', l, 'c', c, 'v', v)
  if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[4]) end
end
return applied
