// The web UI's build: static files into dist/web, which the daemon serves at `/`.
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';
import { fileURLToPath } from 'node:url';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  plugins: [react()],
  // noVNC uses top-level await.
  build: { outDir: '../dist/web', emptyOutDir: true, target: 'es2022', chunkSizeWarningLimit: 1500 },
  // `vite` in dev: the API of a local daemon behind the same origin.
  server: { proxy: { '/api': { target: 'http://127.0.0.1:8420', ws: true } } },
});
