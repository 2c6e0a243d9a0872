import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', '.tools/', '.data/', 'coverage/', 'dist/', 'bench/work/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-restricted-imports': [
        'error',
        { paths: [{ name: 'bullmq', message: 'Only queues/ imports bullmq (see DESIGN.md).' }] },
      ],
    },
  },
  { files: ['queues/**'], rules: { 'no-restricted-imports': 'off' } },
  {
    files: ['src/oci/**', 'src/disk/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['../*', '!../oci/*', '!../disk/*'], message: 'oci/ and disk/ import nothing of ours.' },
          ],
        },
      ],
    },
  },
  { files: ['bin/**/*.js', 'bin/**/*.mjs', 'eslint.config.js'], languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } } },
);
