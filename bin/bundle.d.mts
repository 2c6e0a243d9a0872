/** Where bundles are written: node_modules/.cache/dvcr-importer of the project. */
export declare const BUNDLE_CACHE: string;
/** Bundles a TypeScript entry of the project; returns the bundle's path (throws when esbuild cannot). */
export declare function bundle(entry: string): string;
