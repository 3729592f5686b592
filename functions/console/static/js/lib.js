// The front-end stack in one place: Preact, its hooks, and htm (tagged templates for
// Preact, so no build step turns JSX into calls).
import { h, render, Fragment } from '../vendor/preact.mjs';
import htm from '../vendor/htm.mjs';

export { h, render, Fragment };
export { useState, useEffect, useRef, useCallback, useMemo } from '../vendor/hooks.mjs';
export const html = htm.bind(h);
