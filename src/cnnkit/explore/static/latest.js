// "Latest request wins": at most one request of a kind in flight; calls made meanwhile replace each other, and only
// the answer to the newest call is shown. Older answers are dropped, so a slow reply never paints over a newer one,
// and the server (which computes one request at a time) is never sent a queue of stale images.

export function latestWins(task, {apply, fail, idle} = {}) {
  let running = false;
  let pending = null;  // the newest call not yet started: {args, ticket}
  let ticket = 0;
  async function pump() {
    running = true;
    while (pending) {
      const call = pending;
      pending = null;
      try {
        const result = await task(...call.args);
        if (call.ticket === ticket && apply) apply(result, ...call.args);
      } catch (error) {
        if (call.ticket === ticket && fail) fail(error);
      }
    }
    running = false;
    if (idle) idle();
  }
  return (...args) => {
    ticket += 1;
    pending = {args, ticket};
    if (!running) pump();
  };
}
