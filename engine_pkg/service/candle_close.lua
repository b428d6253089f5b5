-- Close the open 1-minute candle of one symbol by time (engine service; see candles.lua).
--
-- KEYS[1] candle:1m:{SYM}   KEYS[2] candle:closed:1m:{SYM}
-- ARGV[1] SYM   ARGV[2] cutoff minute (YYYYMMDDHHMM UTC)
-- ARGV[3] first minute of the live window ('' or absent: none). An older candle belongs to a
--         replayed timeline and is left open (a later trade closes it, as before).
--
-- When the hash holds an open candle whose minute `t` is in [first, cutoff), the candle is
-- pushed onto candle:closed:1m:{SYM} exactly as candles.lua pushes a candle a later trade
-- closes ({"s","o","h","l","c","v","t"}, numbers as JSON integers), `t o h l c v` are removed
-- from the hash, its `seq` (the replay guard) is kept and the closed minute is recorded as
-- `ct`: a late trade of that minute must not reopen it. Atomic, and idempotent: run again it
-- finds no candle. Returns '' when the candle was closed or none is open, else the open
-- candle's `t` (not due yet).

local t, o, h, l, c, v = unpack(redis.call('HMGET', KEYS[1], 't', 'o', 'h', 'l', 'c', 'v'))
if not (t and o and h and l and c and v) then return '' end
if t >= ARGV[2] or (ARGV[3] and ARGV[3] ~= '' and t < ARGV[3]) then return t end
redis.call('RPUSH', KEYS[2], '{"s":"' .. ARGV[1] .. '","o":' .. o .. ',"h":' .. h .. ',"l":' .. l ..
  ',"c":' .. c .. ',"v":' .. v .. ',"t":"' .. t .. '"}')
redis.call('HDEL', KEYS[1], 't', 'o', 'h', 'l', 'c', 'v')
redis.call('HSET', KEYS[1], 'ct', t)
return ''
