/** Reading a bootstrap file into the image model, with errors that name the file. */
import * as fs from 'node:fs';
import { decodeBootstrap } from '../format/decode';
import { RafsImage } from '../format/model';
import { BuildError, errorMessage } from './errors';

export function loadBootstrap(file: string): { image: RafsImage; size: number } {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (err) {
    throw new BuildError(file, errorMessage(err));
  }
  try {
    return { image: decodeBootstrap(buf), size: buf.length };
  } catch (err) {
    throw new BuildError(file, errorMessage(err));
  }
}
