/**
 * How users run the CLI, as every hint and message spells it: `npx depthcast` works from the
 * package folder right after `npm install` (npm finds the package's own bin), where a bare
 * `depthcast` is only on PATH after `npm link`.
 */
export const CLI = 'npx depthcast';
