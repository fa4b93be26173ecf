#!/usr/bin/env node
import { simMain } from '../dist/sim-cli.js';

process.exitCode = await simMain(process.argv.slice(2));
