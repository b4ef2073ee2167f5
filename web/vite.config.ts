// The bundle goes into the proxy's package (src/limen/proxy/webui/dist, gitignored), served
// under /web with hashed asset names (cached for a year; index.html never cached).
import { defineConfig } from "vite";

export default defineConfig({
  base: "/web/",
  build: {
    outDir: "../src/limen/proxy/webui/dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    sourcemap: false,
    chunkSizeWarningLimit: 2000,
  },
});
